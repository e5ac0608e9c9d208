"""Latency of dense vs compressed MiniLM in eager PyTorch and ONNX Runtime, both compression layouts, one process.

    python -m analysis.bench.runtimes                             # 20/30/40% removed, batch 1 and 32, 1 and all threads
    python -m analysis.bench.runtimes --sparsity 0.3 --repeats 3  # fewer settings

The gates follow `random_gate_pattern(..., hidden=True)`: the removal spread over the inner widths
(heads' dims, FFN neurons) and the hidden width, as trained gates spread it, so the two layouts differ:
"inner" (compress's default) drops the inner structures only, "hidden" also the hidden-width columns and
rows (docs/design.md §3). Every model is exported to ONNX (`gatecore.export_onnx`) and checked against
PyTorch on real sentences (max abs logit difference, recorded).

Timing, per (threads, batch): warm-up, then `repeats` rounds; each round runs every model once in every
runtime, interleaved, so a drift of a shared machine hits all alike. A ratio is dense / compressed of the
same round and runtime; reported: the median over rounds and its quartiles, next to the FLOP ceiling
(dense / compressed FLOPs of that layout). Writes results/bench/runtimes_<tag>.json; needs the optional
ONNX packages (`make onnx`). docs/design.md §3, §5.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import tempfile
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

import gatecore
from analysis import doc_blocks
from analysis.bench.latency import random_inputs
from analysis.cli import add_options, from_args, option
from analysis.constants import study_results
from analysis.plotting import save_figure
from analysis.provenance import provenance, small_mode, write_json
from gatecore.onnx_export import export_onnx, onnx_logits, onnx_session, require

SPARSITIES = (0.2, 0.3, 0.4)  # fraction of the gated weights removed (the request)
BATCHES = (1, 32)
THREADS = (1, 0)  # 0: all cores
SEQ = 128
REPEATS = {1: 20, 32: 5}  # rounds per batch size (batch 32 costs ~30x batch 1)
WARMUP = 1
SEED = 0
LAYOUTS = ("inner", "hidden")
SENTENCES = [
    "a gripping, beautifully acted film .",
    "the plot is thin and the jokes fall flat",
    "an hour and a half of my life i will not get back",
    "it 's a charming and often affecting journey .",
]


@dataclass(frozen=True)
class RuntimesConfig:
    """One benchmark run; see the CLI help for each field."""

    model: str | None = option(None, "model name or local folder; None: the offline all-MiniLM-L6-v2")
    sparsity: tuple = option(SPARSITIES, "fractions of the gated weights removed")
    batch: tuple = option(BATCHES, "batch sizes")
    threads: tuple = option(THREADS, "CPU threads per runtime (0: all cores)")
    seq: int = option(SEQ, "sequence length")
    repeats: int | None = option(None, f"rounds per cell; None: {REPEATS} by batch size")
    warmup: int = option(WARMUP, "untimed rounds first")
    seed: int = option(SEED, "seed of the gate pattern")
    ort_spinning: bool = option(
        False,
        "let ONNX Runtime's idle threads busy-wait after a run (its default); off here: interleaved, each session's "
        "spinning threads took the cores of the next model timed (2 threads, batch 1: dense eager 111 ms vs 32 ms)",
    )
    note: str = option("", "recorded as is (e.g. that the machine was shared)")
    out: Path = option(study_results("bench"), "output folder")


def n_threads(t: int) -> int:
    return t if t > 0 else (os.cpu_count() or 1)


def build_models(cfg: RuntimesConfig, folder: Path) -> tuple[dict, dict, dict]:
    """({name: torch model}, {name: onnx path}, {name: record}) for dense and every (sparsity, layout)."""
    dense, tok = gatecore.load_model(cfg.model)
    dense.eval()
    real = dict(tok(SENTENCES, padding=True, return_tensors="pt"))
    models, paths, records = {"dense": dense}, {}, {}
    for s in cfg.sparsity:
        gated = copy.deepcopy(dense)
        gatecore.add_gates(gated)
        report = gatecore.random_gate_pattern(gated, s, seed=cfg.seed, hidden=True)
        gated.eval()
        for layout in LAYOUTS:
            name = f"{layout}_{round(100 * s)}"
            models[name] = gatecore.compress(copy.deepcopy(gated), layout=layout)
            size = gatecore.size_report(dense, models[name], seq=cfg.seq)
            records[name] = {
                "sparsity_asked": s,
                "removed_got": report.removed_fraction,
                "layout": layout,
                "size": size.as_dict(),
                "max_abs_diff_vs_gated": _max_diff(models[name], gated, real),
            }
    for name, m in models.items():
        t = time.perf_counter()
        paths[name] = export_onnx(m, folder / f"{name}.onnx")
        with torch.no_grad():
            ref = m(**real).logits
        diff = (onnx_logits(onnx_session(paths[name], 1), real["input_ids"], real["attention_mask"]) - ref).abs().max()
        records.setdefault(name, {}).update(
            onnx_max_abs_diff_vs_torch=diff.item(),
            onnx_export_s=time.perf_counter() - t,
            onnx_mb=paths[name].stat().st_size / 2**20,
        )
        print(f"{name}: exported in {time.perf_counter() - t:.0f}s, ONNX vs PyTorch max |diff| {diff.item():.2e}")
    return models, paths, records


@torch.no_grad()
def _max_diff(a, b, inputs) -> float:
    return (a(**inputs).logits - b(**inputs).logits).abs().max().item()


def time_cell(models: dict, sessions: dict, batch: int, seq: int, repeats: int, warmup: int) -> dict:
    """Interleaved rounds over every (runtime, model); per-round dense/compressed ratios."""
    inputs = random_inputs(models["dense"], batch, seq, "cpu")
    feeds = {k: v.numpy() for k, v in inputs.items()}
    runners = {("eager", n): (lambda m=m: m(**inputs)) for n, m in models.items()}
    runners.update({("onnx", n): (lambda s=s: s.run(None, feeds)) for n, s in sessions.items()})
    with torch.inference_mode():
        for _ in range(warmup):
            for run in runners.values():
                run()
        times = {k: [] for k in runners}
        for _ in range(repeats):
            for k, run in runners.items():
                t = time.perf_counter()
                run()
                times[k].append(time.perf_counter() - t)
    out = {}
    for (rt, name), ts in times.items():
        row = {"median_ms": 1e3 * statistics.median(ts), "min_ms": 1e3 * min(ts), "n": len(ts)}
        if name != "dense":
            ratios = [d / t for d, t in zip(times[(rt, "dense")], ts)]
            q = statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1 else [ratios[0]] * 3
            row.update(
                speedup=statistics.median(ratios),
                speedup_q25=q[0],
                speedup_q75=q[2],
                speedup_of_medians=statistics.median(times[(rt, "dense")]) / statistics.median(ts),
            )
        out.setdefault(rt, {})[name] = row
    return out


def run(cfg: RuntimesConfig) -> Path:
    """Build, export and check every model, time every cell, write and return the results file.
    Small mode (GATECORE_SMALL=1): the first sparsity, batch 1, 1 thread, 2 rounds."""
    require("onnx", "onnxscript", "onnxruntime")
    if small_mode():
        cfg = replace(cfg, sparsity=cfg.sparsity[:1], batch=cfg.batch[:1], threads=cfg.threads[:1], repeats=2, warmup=1)
    with tempfile.TemporaryDirectory() as tmp:
        torch.set_num_threads(1)
        models, paths, records = build_models(cfg, Path(tmp))
        cells = []
        for threads in cfg.threads:
            torch.set_num_threads(n_threads(threads))
            sessions = {n: onnx_session(p, threads, spinning=cfg.ort_spinning) for n, p in paths.items()}
            for batch in cfg.batch:
                reps = cfg.repeats or REPEATS.get(batch, 5)
                t = time.perf_counter()
                cell = time_cell(models, sessions, batch, cfg.seq, reps, cfg.warmup)
                cells.append({"threads": n_threads(threads), "batch": batch, "seq": cfg.seq, "repeats": reps, **cell})
                print(
                    f"threads {n_threads(threads)}, batch {batch} ({time.perf_counter() - t:.0f}s): "
                    + "; ".join(
                        f"{rt} {n} {r['speedup']:.2f}x"
                        for rt in ("eager", "onnx")
                        for n, r in cell[rt].items()
                        if n != "dense"
                    )
                )
            del sessions
    config = {f.name: _recorded(getattr(cfg, f.name)) for f in fields(cfg)}
    out = {
        **provenance(config, cfg.seed, "cpu"),
        "cpu_count": os.cpu_count(),
        "models": records,
        "cells": cells,
        "onnxruntime": _version("onnxruntime"),
        "onnx": _version("onnx"),
        "onnxscript": _version("onnxscript"),
    }
    tag = (
        "s"
        + "-".join(f"{round(100 * s)}" for s in cfg.sparsity)
        + "_t"
        + "-".join(str(t) if t > 0 else "all" for t in cfg.threads)
    )
    path = write_json(Path(cfg.out) / f"runtimes_{tag}.json", out)
    print(f"wrote {path}")
    return path


def load_results(results_dir) -> tuple[dict, dict, dict]:
    """({(threads, batch): cell}, {model name: record}, {file: its whole record}) from
    <results>/bench/runtimes_*.json (not small mode)."""
    import json

    from analysis.provenance import warn_if_dirty

    cells, records, sources = {}, {}, {}
    for f in sorted(study_results("bench", results_dir).glob("runtimes_*.json")):
        d = json.loads(f.read_text())
        if d.get("small_mode"):
            continue
        warn_if_dirty(f, d)
        sources[f] = d
        records.update(d["models"])
        for c in d["cells"]:
            cells[(c["threads"], c["batch"])] = c
    return cells, records, sources


def summary_table(results_dir) -> str:
    """Markdown: speedup (median of per-round ratios, with its quartiles) per runtime, threads, batch and layout,
    the dense model's median latency, and the FLOP ceilings."""
    cells, records, _ = load_results(results_dir)
    return _table(cells, records)


def _table(cells: dict, records: dict) -> str:
    names = {
        layout: sorted((n for n in records if n.startswith(layout + "_")), key=lambda n: records[n]["sparsity_asked"])
        for layout in LAYOUTS
    }
    fracs = [f"{records[n]['sparsity_asked']:.0%}" for n in names["inner"]]
    lines = [
        "| runtime | threads | batch (rounds) | dense, ms | "
        + " | ".join(f"{lay} {f}" for lay in LAYOUTS for f in fracs)
        + " |",
        "|---|---|---|---|" + "---|" * (len(LAYOUTS) * len(fracs)),
    ]
    for (t, b), cell in sorted(cells.items()):
        for rt in ("eager", "onnx"):
            row = cell[rt]
            lines.append(
                f"| {'eager PyTorch' if rt == 'eager' else 'ONNX Runtime'} | {t} | {b} ({cell['repeats']}) | "
                f"{row['dense']['median_ms']:.1f} | "
                + " | ".join(
                    f"{row[n]['speedup']:.2f}x ({row[n]['speedup_q25']:.2f}-{row[n]['speedup_q75']:.2f})"
                    for lay in LAYOUTS
                    for n in names[lay]
                )
                + " |"
            )
    lines.append(
        "| FLOP ceiling | | | | "
        + " | ".join(f"{records[n]['size'][lay]['flop_speedup_ceiling']:.2f}x" for lay in LAYOUTS for n in names[lay])
        + " |"
    )
    return "\n".join(lines)


def doc_block(results_dir) -> str | None:
    """docs/results.md's runtimes table (None without results), then each results file with its command."""
    cells, records, sources = load_results(results_dir)
    if not cells:
        return None
    return (
        _table(cells, records)
        + "\n\nSpeedup: median over rounds of dense / compressed in the same round and runtime (quartiles in brackets). "
        + " ".join(doc_blocks.source(f, d, __name__) for f, d in sources.items())
    )


def make_figures(results_dir, figures_dir) -> list[Path]:
    """Speedup vs removed fraction, eager and ONNX Runtime, both layouts, with each layout's FLOP ceiling:
    one panel per (threads, batch), from results/bench/runtimes_*.json only."""
    import matplotlib.pyplot as plt

    cells, records, sources = load_results(results_dir)
    if not cells:
        return []
    keys = sorted(cells)
    threads, batches = sorted({t for t, _ in keys}), sorted({b for _, b in keys})
    fig, axes = plt.subplots(
        len(threads), len(batches), figsize=(4.2 * len(batches), 3.4 * len(threads)), squeeze=False, sharex=True
    )
    style = {"inner": "-", "hidden": "--"}
    for (t, b), cell in cells.items():
        ax = axes[threads.index(t)][batches.index(b)]
        for layout in LAYOUTS:
            names = sorted(
                (n for n in records if n.startswith(layout + "_")), key=lambda n: records[n]["sparsity_asked"]
            )
            xs = [records[n]["sparsity_asked"] for n in names]
            ax.plot(
                xs,
                [records[n]["size"][layout]["flop_speedup_ceiling"] for n in names],
                color="k",
                ls=style[layout],
                lw=0.9,
                alpha=0.6,
                label=f"FLOP ceiling, {layout}",
            )
            for rt, color in (("eager", "C0"), ("onnx", "C1")):
                rows = [cell[rt][n] for n in names]
                ys = [r["speedup"] for r in rows]
                err = [
                    [y - r["speedup_q25"] for y, r in zip(ys, rows)],
                    [r["speedup_q75"] - y for y, r in zip(ys, rows)],
                ]
                ax.errorbar(
                    xs,
                    ys,
                    yerr=err,
                    color=color,
                    ls=style[layout],
                    marker="o" if layout == "inner" else "s",
                    capsize=2,
                    label=f"{'eager PyTorch' if rt == 'eager' else 'ONNX Runtime'}, {layout}",
                )
        ax.axhline(1.0, color="grey", lw=0.6)
        ax.set_title(
            f"{t} thread{'s' if t > 1 else ''}, batch {b}, seq {cell['seq']} ({cell['repeats']} rounds)", fontsize=9
        )
        ax.set_xlabel("fraction of the gated weights removed")
        ax.set_ylabel("speedup over dense")
    for t in threads:
        for b in batches:
            if (t, b) not in cells:
                ax = axes[threads.index(t)][batches.index(b)]
                ax.set_axis_off()
                ax.text(0.5, 0.5, f"{t} threads, batch {b}: not run", ha="center", transform=ax.transAxes)
    axes[0][0].legend(fontsize=6)
    shared = any("shared" in (d["config"].get("note") or "") for d in sources.values())
    fig.suptitle(
        "MiniLM, dense / compressed latency (median of per-round ratios, bars: quartiles)"
        + ("\nmeasured on a shared machine: see the notes in results/bench/runtimes_*.json" if shared else ""),
        fontsize=8,
    )
    fig.tight_layout()
    return [save_figure(fig, Path(figures_dir) / "bench_runtimes.png")]


def _version(module: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(module)
    except PackageNotFoundError:
        return None


def _recorded(value):
    return str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m analysis.bench.runtimes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(ap, RuntimesConfig, items={"sparsity": float, "batch": int, "threads": int})
    cfg = from_args(RuntimesConfig, ap.parse_args(argv))
    bad = (
        [f"--sparsity {s}" for s in cfg.sparsity if not 0 <= s < 1]
        + [f"--batch {b}" for b in cfg.batch if b < 1]
        + [f"--threads {t}" for t in cfg.threads if t < 0]
        + (["--seq"] if cfg.seq < 2 else [])
        + (["--repeats"] if cfg.repeats is not None and cfg.repeats < 1 else [])
        + (["--warmup"] if cfg.warmup < 0 else [])
    )
    if bad:
        ap.error("out of range: " + ", ".join(bad))
    try:
        require("onnx", "onnxscript", "onnxruntime")
    except ImportError as e:
        ap.error(str(e))
    run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
