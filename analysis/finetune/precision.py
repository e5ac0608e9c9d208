"""What bfloat16 autocast changes: cpu-base's grid points trained in both precisions, side by side.

cpu-base moved to bfloat16 autocast after its first float32 points (kept in cpu-base-fp32: same runs, same
points, float32). Two readings, each pairing trainings that differ in `autocast` alone:

- search points (val): a point is a run's spec (task, method, seed, keep, ...) and its lr / gate lr / lam, read
  from both searches' points files; the first seeds' searches start from the same grid, so they share points.
- trained points (val and dev): the records (a record's config is its chosen point) of cpu-base-fp32,
  cpu-base and PRECISION_POINTS, which holds single-point runs of a point one search chose and the other did
  not (`make experiments-base`), so that dev is compared at the same point, not at two different choices.

    precision_block(results_dir)   docs/results.md's tables; None until a point was trained in both precisions
"""

from __future__ import annotations

import statistics
from pathlib import Path

from analysis import doc_blocks
from analysis.constants import POINTS_SUFFIX, study_results
from analysis.finetune.config import SweepConfig, expand, run_id
from analysis.finetune.stats import pm
from analysis.provenance import read_jsonl, warn_if_dirty

PAIR = ("cpu-base-fp32", "cpu-base")  # float32, then the same protocol under bfloat16 autocast
PRECISION_POINTS = "precision-points"  # single-point runs in either precision
KEYS = ("lr", "gate_lr", "lam")
HEAD = ["task", "method", "seed", "removed asked", "lr", "gate lr"]


def _frozen(d: dict) -> tuple:
    """A spec or config without `autocast`, hashable."""
    return tuple(sorted((k, str(v)) for k, v in d.items() if k != "autocast"))


def _specs(precision: str | None) -> dict:
    """{run_id: frozen spec} of cpu-base's runs in that precision (None: the protocol's own)."""
    over = {} if precision is None else {"autocast": precision}
    return {run_id(s): _frozen(s) for s in expand(SweepConfig.of_protocol(PAIR[1], **over))}


def _points(path: Path, specs: dict) -> dict:
    """{(spec, point): entry} of a points file, for the runs `specs` knows (the first seeds' searches)."""
    out, lines = {}, read_jsonl(path)
    if lines:
        warn_if_dirty(path, lines)
    for line in lines:
        if line.get("run_id") in specs:
            out[(specs[line["run_id"]], tuple(line["point"].get(k) for k in KEYS))] = line["entry"]
    return out


def _records(folder: Path) -> dict:
    """{frozen config: {precision: record}} of every record of the three files (a config is a trained point)."""
    out: dict = {}
    for name in (*PAIR, PRECISION_POINTS):
        path = folder / f"{name}.jsonl"
        recs = [r for r in read_jsonl(path) if r.get("dev_main") is not None and not r.get("small_mode")]
        if recs:
            warn_if_dirty(path, recs)
        for r in recs:
            out.setdefault(_frozen(r["config"]), {})[r["config"].get("autocast") or "float32"] = r
    return out


def _lead(s: dict, lr, gate_lr) -> list:
    asked = f"{1 - float(s['keep']):.0%}" if s.get("keep") not in (None, "None") else ""
    return [
        s["task"],
        s["method"],
        s["seed"],
        asked,
        f"{float(lr):g}",
        "" if gate_lr in (None, "None") else f"{float(gate_lr):g}",
    ]


def _got(a: dict, b: dict) -> str:
    if a.get("removed_fraction") is None:
        return ""
    return f"{100 * a['removed_fraction']:.1f} → {100 * b['removed_fraction']:.1f}"


def _summary(diffs: list, what: str) -> str:
    """Median first: one collapsed training (a val of 10 where the other precision reached 85) moves a mean."""
    return (
        f"Over the {len(diffs)} pair(s), bf16 − float32 on {what}: median {statistics.median(diffs):+.1f}, mean "
        f"{pm(diffs, signed=True)} (from {min(diffs):+.1f} to {max(diffs):+.1f})."
    )


def points_table(fp32: dict, bf16: dict) -> str | None:
    """Markdown of the search points in both maps (val), and a summary line; None without one."""
    both = sorted((k for k in fp32 if k in bf16), key=lambda k: (dict(k[0])["task"], dict(k[0])["method"], k[1]))
    if not both:
        return None
    head = HEAD + ["val float32", "val bf16", "bf16 − float32", "removed got float32 → bf16"]
    rows = []
    for spec, point in both:
        a, b = fp32[(spec, point)], bf16[(spec, point)]
        d = b["val_main"] - a["val_main"]
        rows.append(
            _lead(dict(spec), *point[:2]) + [f"{a['val_main']:.1f}", f"{b['val_main']:.1f}", f"{d:+.1f}", _got(a, b)]
        )
    diffs = [bf16[k]["val_main"] - fp32[k]["val_main"] for k in both]
    return f"{doc_blocks.table(head, rows)}\n\n{_summary(diffs, 'val')}"


def records_table(records: dict) -> str | None:
    """Markdown of the trained points with a record in both precisions (val and dev); None without one."""
    both = sorted((k, v) for k, v in records.items() if {"float32", "bfloat16"} <= v.keys())
    if not both:
        return None
    head = HEAD + [
        "val float32 / bf16",
        "dev float32",
        "dev bf16",
        "bf16 − float32 (dev)",
        "removed got float32 → bf16",
    ]
    rows, diffs = [], []
    for key, by in both:
        s, a, b = dict(key), by["float32"], by["bfloat16"]
        diffs.append(b["dev_main"] - a["dev_main"])
        rows.append(
            _lead(s, s["lr"], s.get("gate_lr"))
            + [f"{a['val_main']:.1f} / {b['val_main']:.1f}", f"{a['dev_main']:.1f}", f"{b['dev_main']:.1f}"]
            + [f"{diffs[-1]:+.1f}", _got(a, b)]
        )
    return f"{doc_blocks.table(head, rows)}\n\n{_summary(diffs, 'dev')}"


def choices(folder: Path, specs: list[dict]) -> list[str]:
    """One line per run both searches finished (`specs`: _specs of each of PAIR): the point each chose and its dev."""
    recs = [
        {sp[r["run_id"]]: r for r in read_jsonl(folder / f"{n}.jsonl") if r.get("run_id") in sp}
        for n, sp in zip(PAIR, specs)
    ]
    out = []
    for key in sorted(k for k in recs[0] if k in recs[1]):
        s, parts = dict(key), []
        for name, r in zip(("float32", "bf16"), (recs[0][key], recs[1][key])):
            c = r["config"]
            parts.append(
                f"{name} lr {c['lr']:g}, gate lr {c.get('gate_lr')} (val {r['val_main']:.1f}, dev {r['dev_main']:.1f})"
            )
        out.append(f"- {s['task']} {s['method']} seed {s['seed']}: the searches chose " + "; ".join(parts) + ".")
    return out


def precision_block(results_dir) -> str | None:
    folder = study_results("finetune", results_dir)
    specs = [_specs("float32"), _specs(None)]  # PAIR's run ids
    maps = [_points(folder / f"{n}{POINTS_SUFFIX}", sp) for n, sp in zip(PAIR, specs)]
    parts = []
    if (t := points_table(*maps)) is not None:
        paths = " and ".join(f"`results/finetune/{n}{POINTS_SUFFIX}`" for n in PAIR)
        parts.append(f"Search points (val), from {paths}:\n\n{t}")
    if lines := choices(folder, specs):
        parts.append("\n".join(lines))
    if (t := records_table(_records(folder))) is not None:
        files = ", ".join(f"`results/finetune/{n}.jsonl`" for n in (*PAIR, PRECISION_POINTS))
        parts.append(f"Trained points with a record in both precisions (val and dev), from {files}:\n\n{t}")
    return "\n\n".join(parts) or None
