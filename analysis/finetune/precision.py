"""What bfloat16 autocast changes: the grid points cpu-base trained in both precisions, side by side.

cpu-base moved to bfloat16 autocast after its first float32 points (kept in cpu-base-fp32: same runs, same
points, float32). A point is a run's spec (task, method, seed, keep, ...) and its lr / gate lr / lam; the pair
is two points whose specs differ in `autocast` alone. `precision_table` lists every such pair with val and, for
gate runs, the removed fraction, and the chosen points' dev where both runs have a record.

    precision_block(results_dir)   docs/results.md's table; None until a point was trained in both precisions
"""

from __future__ import annotations

from pathlib import Path

from analysis import doc_blocks
from analysis.constants import POINTS_SUFFIX, study_results
from analysis.finetune.config import SweepConfig, expand, run_id
from analysis.finetune.stats import pm
from analysis.provenance import read_jsonl, warn_if_dirty

PAIR = ("cpu-base-fp32", "cpu-base")  # float32, then the same protocol under bfloat16 autocast
KEYS = ("lr", "gate_lr", "lam")


def _specs(precision: str | None) -> dict:
    """{run_id: spec without `autocast`} of cpu-base's runs in that precision (None: the protocol's own)."""
    over = {} if precision is None else {"autocast": precision}
    specs = expand(SweepConfig.of_protocol(PAIR[1], **over))
    return {run_id(s): tuple(sorted((k, str(v)) for k, v in s.items() if k != "autocast")) for s in specs}


def _points(path: Path, specs: dict) -> dict:
    """{(spec, point): entry} of a points file, for the runs `specs` knows (the first seeds' searches)."""
    out, lines = {}, read_jsonl(path)
    if lines:
        warn_if_dirty(path, lines)
    for line in lines:
        if line.get("run_id") in specs:
            point = tuple(line["point"].get(k) for k in KEYS)
            out[(specs[line["run_id"]], point)] = line["entry"]
    return out


def precision_table(fp32: dict, bf16: dict, records: dict) -> str | None:
    """Markdown of the pairs in both points maps; `records`: {spec: (fp32 record, bf16 record)} for the dev line."""
    both = [k for k in fp32 if k in bf16]
    if not both:
        return None
    head = ["task", "method", "seed", "removed asked", "lr", "gate lr", "val float32", "val bf16", "bf16 − float32"]
    head += ["removed got float32 → bf16"]
    rows = []
    for spec, point in sorted(both, key=lambda k: (dict(k[0])["task"], dict(k[0])["method"], k[1])):
        s, a, b = dict(spec), fp32[(spec, point)], bf16[(spec, point)]
        asked = f"{1 - float(s['keep']):.0%}" if s.get("keep") not in (None, "None") else ""
        got = ""
        if a.get("removed_fraction") is not None:
            got = f"{100 * a['removed_fraction']:.1f} → {100 * b['removed_fraction']:.1f}"
        lr, gate_lr, _ = point
        rows.append(
            [s["task"], s["method"], s["seed"], asked, f"{lr:g}", "" if gate_lr is None else f"{gate_lr:g}"]
            + [f"{a['val_main']:.1f}", f"{b['val_main']:.1f}", f"{b['val_main'] - a['val_main']:+.1f}", got]
        )
    lines = [doc_blocks.table(head, rows)]
    diffs = [bf16[k]["val_main"] - fp32[k]["val_main"] for k in both]
    lines.append(
        f"\nOver the {len(diffs)} pair(s), bf16 − float32 on val: {pm(diffs, signed=True)} "
        f"(from {min(diffs):+.1f} to {max(diffs):+.1f})."
    )
    for spec, (a, b) in sorted(records.items()):
        s = dict(spec)
        same = all(a["config"].get(k) == b["config"].get(k) for k in KEYS)
        lines.append(
            f"\n{s['task']} {s['method']} seed {s['seed']}: dev {a['dev_main']:.1f} (float32) vs {b['dev_main']:.1f} "
            f"(bf16), {'the same point chosen' if same else 'different points chosen'} "
            f"(lr {a['config']['lr']:g} / {b['config']['lr']:g}, gate lr {a['config'].get('gate_lr')} / "
            f"{b['config'].get('gate_lr')})."
        )
    return "\n".join(lines)


def precision_block(results_dir) -> str | None:
    folder = study_results("finetune", results_dir)
    fp32_specs, bf16_specs = _specs("float32"), _specs(None)
    maps = [_points(folder / f"{name}{POINTS_SUFFIX}", specs) for name, specs in zip(PAIR, (fp32_specs, bf16_specs))]
    recs = [
        {specs[r["run_id"]]: r for r in read_jsonl(folder / f"{name}.jsonl") if r.get("run_id") in specs}
        for name, specs in zip(PAIR, (fp32_specs, bf16_specs))
    ]
    table = precision_table(*maps, {k: (recs[0][k], recs[1][k]) for k in recs[0] if k in recs[1]})
    if table is None:
        return None
    paths = " and ".join(f"`results/finetune/{n}{POINTS_SUFFIX}`" for n in PAIR)
    return f"{table}\n\nFrom {paths} (the points of each run's grid search, on val)."
