"""A controller setting measured on the runs it would change (issue 24, item 3): the same gate runs, one setting apart.

variant_table(base, variant, key)  per gate run of `variant` with a twin in `base` (same task, seed, keep, bias and
                                   chosen lrs; `key` differs): the removed fraction over training, what the
                                   controller alone reached, gates the correction changed, val and dev, base → variant;
                                   then the paired differences
variants_block(dir)                that table for each VARIANTS entry with records, for docs/results.md
"""

from __future__ import annotations

from analysis.finetune.results import Protocol, load_protocols
from analysis.finetune.stats import controller_met, gates_changed, pm, removed_before
from analysis.finetune.tables import md_header, md_row

# (the protocol, a file of its gate runs trained with one controller setting changed, that setting's config key)
VARIANTS = (
    ("cpu-fair", "control-recenter", "control_recenter"),
    ("cpu-fair", "cpu-fair-rc", "control_recenter"),  # every cpu-fair gate run at 30%, with recenter
)
TWIN_KEYS = ("task", "seed", "keep", "bias", "gate_lr", "lr", "epochs", "objective", "train_examples")


def _twin(base: Protocol, rec: dict, key: str) -> dict | None:
    cfg = rec["config"]
    for r in base.records:
        c = r["config"]
        if c.get("method") == cfg.get("method") and all(c.get(k) == cfg.get(k) for k in TWIN_KEYS):
            if bool(c.get(key)) != bool(cfg.get(key)):
                return r
    return None


def _trace(rec: dict) -> str:
    """Removed % at each curve point, the peak in bold."""
    got = [100 * p["removed_fraction"] for p in rec.get("curve", [])]
    peak = max(range(len(got)), key=got.__getitem__) if got else -1
    return " ".join(f"**{g:.1f}**" if i == peak else f"{g:.1f}" for i, g in enumerate(got))


def _alone(rec: dict) -> tuple[float, int]:
    """(% removed by the controller alone, gates the correction changed)."""
    return 100 * (removed_before(rec) or 0.0), gates_changed(rec)


def _scores(rec: dict) -> str:
    return f"{rec['val_main']:.1f} / {rec['dev_main']:.1f}"


def variant_table(base: Protocol, variant: Protocol, key: str) -> str | None:
    """Markdown (module doc); None when no run of `variant` has a twin in `base`."""
    cols = [
        "task, seed",
        f"`{key}`",
        "removed % over training (curve points)",
        "controller alone %",
        "within 2 points",
        "gates changed by correction",
        "val / dev",
    ]
    lines, diffs = md_header(cols), []
    for rec in variant.records:
        twin = _twin(base, rec, key)
        if twin is None:
            continue
        diffs.append(
            [_alone(rec)[0] - _alone(twin)[0], rec["val_main"] - twin["val_main"], rec["dev_main"] - twin["dev_main"]]
        )
        asked = 100 * rec.get("removed_asked", 0.0)
        for r in (twin, rec):
            alone, changed = _alone(r)
            met = "yes" if controller_met(r) else "**no**"
            where = f"{r['config']['task']}, s{r['config']['seed']} ({asked:.0f}% asked)"
            row = [where, str(bool(r["config"].get(key))).lower(), _trace(r), f"{alone:.1f}", met, str(changed)]
            lines.append(md_row([*row, _scores(r)]))
    if not diffs:
        return None
    removed, val, dev = (pm(col, signed=True) for col in zip(*diffs))
    return "\n".join(lines) + (
        f"\n\nWith `{key}` minus without, paired over {len(diffs)} run(s): controller alone {removed} points "
        f"removed, val {val}, dev {dev}."
    )


def variants_block(results_dir) -> str | None:
    found = {p.name: p for p in load_protocols(results_dir)}
    parts = []
    for base, variant, key in VARIANTS:
        if base in found and variant in found:
            table = variant_table(found[base], found[variant], key)
            if table:
                parts.append(f"`{variant}` against its twins in `{base}`:\n\n{table}")
    return "\n\n".join(parts) or None
