"""What "x% removed" removes: parameters, encoder-linear weights and FLOPs of compressed MiniLM, both layouts.

    python -m analysis.bench.sizes   # gate checkpoints + synthetic patterns -> results/bench/compression_sizes.json

"x% removed" (the request, `gate_report(...).removed_fraction`) counts the gated weight entries whose row
or column gate is closed. What that saves depends on where the gates closed: `size_report` gives the
parameters, encoder-linear weights and FLOPs removed in the inner layout (compress's default) and the
hidden layout (docs/design.md §3). Rows: every trained gates-all checkpoint in results/hessian/checkpoints
(~30% asked), and synthetic patterns (structured; spread over both widths, `hidden=True`).
"""

from __future__ import annotations

import argparse
import copy
from dataclasses import dataclass, fields
from pathlib import Path

import torch

import gatecore
from analysis import doc_blocks
from analysis.cli import add_options, from_args, option
from analysis.constants import ROOT, study_results
from analysis.provenance import provenance, read_record, write_json

CHECKPOINTS = ROOT / "results" / "hessian" / "checkpoints"
SPARSITIES = (0.2, 0.3, 0.4)
SEQ = 128


@dataclass(frozen=True)
class SizesConfig:
    checkpoints: Path = option(CHECKPOINTS, "folder of gates-all checkpoints (every *gates-all*.pt in it)")
    sparsity: tuple = option(SPARSITIES, "removed fractions of the synthetic patterns")
    seq: int = option(SEQ, "sequence length of the FLOP count")
    seed: int = option(0, "seed of the synthetic patterns")
    out: Path = option(study_results("bench") / "compression_sizes.json", "results file")


def row(dense, gated, source: str, seq: int) -> dict:
    rep = gatecore.gate_report(gated)
    size = gatecore.size_report(dense, gatecore.compress(copy.deepcopy(gated)), seq=seq)
    return {
        "source": source,
        "removed_asked_got": rep.removed_fraction,
        **{layout: size.removed(layout) for layout in ("inner", "hidden")},
        "size": size.as_dict(),
    }


def run(cfg: SizesConfig) -> Path:
    torch.set_num_threads(1)
    dense = gatecore.load_model()[0].eval()
    rows = []
    for ckpt in sorted(Path(cfg.checkpoints).glob("*gates-all*.pt")):
        gated = copy.deepcopy(dense)
        gatecore.load_trainable(gated, ckpt)
        rows.append(row(dense, gated, f"trained: {ckpt.name}", cfg.seq))
    for hidden in (False, True):
        for s in cfg.sparsity:
            gated = copy.deepcopy(dense)
            gatecore.add_gates(gated)
            gatecore.random_gate_pattern(gated, s, seed=cfg.seed, hidden=hidden)
            kind = "spread over both widths" if hidden else "structured"
            rows.append(row(dense, gated, f"synthetic {kind} {s}", cfg.seq))
    for r in rows:
        print(
            f"{r['source']:<45} asked/got {r['removed_asked_got']:.3f}  "
            + "  ".join(
                f"{layout}: params {r[layout]['params_removed']:.3f} linear {r[layout]['encoder_linear_removed']:.3f} "
                f"FLOPs {r[layout]['flops_removed']:.3f}"
                for layout in ("inner", "hidden")
            )
        )
    config = {
        f.name: str(getattr(cfg, f.name)) if isinstance(getattr(cfg, f.name), Path) else getattr(cfg, f.name)
        for f in fields(cfg)
    }
    return write_json(cfg.out, {**provenance(config, cfg.seed, "cpu"), "rows": rows})


def doc_block(results_dir) -> str | None:
    """docs/results.md's table of <results_dir>/bench/compression_sizes.json (None without it): what each pattern
    removes in each layout (inner / hidden); the trained checkpoints as one row, the range over them."""
    path = study_results("bench", results_dir) / "compression_sizes.json"
    rec = read_record(path)
    if rec is None:
        return None
    trained = [r for r in rec["rows"] if r["source"].startswith("trained")]
    groups = [(f"trained gates-all ({len(trained)} checkpoints)", trained)] if trained else []
    for r in rec["rows"]:
        if not r["source"].startswith("trained"):  # "synthetic <kind> <fraction asked>"
            kind, asked = r["source"].rsplit(" ", 1)
            groups.append((f"{kind}, {float(asked):.0%} asked", [r]))

    def span(rows, get) -> str:
        lo, hi = f"{min(map(get, rows)):.1%}", f"{max(map(get, rows)):.1%}"
        return lo if lo == hi else f"{lo.rstrip('%')}-{hi}"

    keys = ("params_removed", "encoder_linear_removed", "flops_removed")
    head = [
        "gates",
        "gated weights removed",
        "parameters",
        "encoder-linear weights",
        f"FLOPs/token (seq {rec['config']['seq']})",
    ]
    rows = [
        [name, span(rows, lambda r: r["removed_asked_got"])]
        + [" / ".join(span(rows, lambda r, lay=lay, k=k: r[lay][k]) for lay in ("inner", "hidden")) for k in keys]
        for name, rows in groups
    ]
    note = 'Each removed fraction: layout "inner" (the default) / layout "hidden".'
    return f"{doc_blocks.table(head, rows)}\n\n{note} {doc_blocks.source(path, rec, __name__)}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m analysis.bench.sizes", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_options(ap, SizesConfig, items={"sparsity": float})
    cfg = from_args(SizesConfig, ap.parse_args(argv))
    if not cfg.checkpoints.is_dir():
        ap.error(f"--checkpoints {cfg.checkpoints} is not a folder")
    print(f"wrote {run(cfg)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
