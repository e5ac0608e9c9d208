"""The race's lr pick and summary: the best grid point per method, steps to each loss level, spreads over seeds."""

from __future__ import annotations

import math

import numpy as np

from ..setup import PRESETS
from .config import RaceConfig


def criterion(run: dict) -> float:
    """The lr-selection criterion: the eval loss at the last step; a diverged run is worst (inf)."""
    last = run["eval_loss"][-1]
    return math.inf if run.get("diverged_at") or last is None else last


def pick_lr(crit: dict) -> float:
    """The grid point with the lowest criterion (lr -> value; nan / inf are worst; ties: the smaller lr)."""
    finite = {lr: v for lr, v in crit.items() if v is not None and math.isfinite(v)}
    if not finite:
        raise ValueError(f"every lr of the grid diverged: {crit}")
    return min(sorted(finite), key=lambda lr: finite[lr])


def steps_to(steps, losses, threshold: float) -> int | None:
    """The first evaluated step whose loss is at or below `threshold`; None if never."""
    for s, v in zip(steps, losses):
        if v is not None and v <= threshold:
            return int(s)
    return None


def steps_to_stay(steps, losses, threshold: float) -> int | None:
    """The first evaluated step from which the loss stays at or below `threshold` to the end; None if it ends above.
    (For a noisy curve the first crossing (`steps_to`) can be a dip; this one cannot.)"""
    out = None
    for s, v in zip(steps, losses):
        if v is None or v > threshold:
            out = None
        elif out is None:
            out = int(s)
    return out


def spread(values) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
    }


def summarize(cfg: RaceConfig, runs: list[dict]) -> dict:
    """Per preset: the grid's criteria, the best lr (and whether at the grid's edge), and over the seeds at it the
    steps to each threshold and the final losses."""
    out = {}
    for preset in cfg.adapters:
        grid = {r["lr"]: criterion(r) for r in runs if r["adapters"] == preset and r["phase"] == "grid"}
        best = pick_lr(grid)
        grid_lrs = sorted(cfg.lrs(preset))
        seeds = [
            r
            for r in runs
            if r["adapters"] == preset
            and r["lr"] == best
            and r["seed"] in cfg.seeds
            and (r["phase"] == "seed" or r["seed"] == cfg.tune_seed)
        ]
        seeds = sorted({r["seed"]: r for r in seeds}.values(), key=lambda r: r["seed"])
        thr = {}
        for t in cfg.thresholds:
            hit = [steps_to(r["steps"], r["eval_loss"], t) for r in seeds]
            stay = [steps_to_stay(r["steps"], r["eval_loss"], t) for r in seeds]
            thr[f"{t:g}"] = {
                "per_seed": hit,
                "reached": sum(h is not None for h in hit),
                "of": len(hit),
                **spread(hit),
                "stays_below": {"per_seed": stay, "reached": sum(h is not None for h in stay), **spread(stay)},
            }
        tail = max(1, cfg.steps // 10)
        out[preset] = {
            "method": PRESETS[preset][0],
            "grid_criterion": {f"{k:g}": (v if math.isfinite(v) else None) for k, v in grid.items()},
            "best_lr": best,
            "best_at_grid_edge": best in (grid_lrs[0], grid_lrs[-1]),
            "seeds": [r["seed"] for r in seeds],
            "trainable": seeds[0]["trainable"] if seeds else None,
            "start_eval_loss": spread([r["eval_loss"][0] for r in seeds]),
            "final_eval_loss": spread([r["eval_loss"][-1] for r in seeds]),
            f"final_train_loss_last{tail}": spread(
                [float(np.mean(r["train_loss"][-tail:])) for r in seeds if r["train_loss"]]
            ),
            "steps_to": thr,
        }
    return out
