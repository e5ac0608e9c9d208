"""Training-curve figures of a finetuning protocol, the plateau table, and the kurtosis-vs-plain layer maps.

Drawn by analysis.finetune.figures.make_figures (from results/finetune/*.jsonl alone):
  figures/finetune_<p>_curves.png           (d) top row: dev metric on the curve's dev subset vs step, every
                                                method, mean ± std band over seeds, trivial baseline dashed;
                                                bottom row (gate settings): % of gated weights removed vs step,
                                                the request dotted
  figures/finetune_<p>_kurtosis_layers.png  (f) per task: kept fractions of plain and kurtosis-weighted gates
                                                by module type and layer, and their difference
  results/finetune/<p>_plateau.md           per task and method, when the mean dev curve reaches its plateau
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.finetune import tables
from analysis.finetune.plotting import (
    GATE_COLORS,
    REF_STYLE,
    heatmap,
    kept_fractions,
    metric,
    pyplot,
    save,
    setting,
    trivial_line,
)
from analysis.finetune.stats import PLATEAU_TAIL, PLATEAU_TOL, mean, mean_curve


def _settings_with_curves(p, task) -> list:
    """The cells of one task that recorded a curve, in the protocol's method order."""
    out = []
    for label in p.labels:
        for keep in p.keeps(label):
            c = p.cell(task, label, keep)
            if c is not None and any(r.get("curve") for r in c.records):
                out.append(c)
    return out


def _style(p, c) -> tuple[str, object]:
    """(color, linestyle): references by method, gate settings by their rank among the protocol's gate settings."""
    if not c.is_gates:
        return REF_STYLE.get(c.method, ("gray", "-."))
    return GATE_COLORS[tables.gate_settings(p).index((c.label, c.keep)) % len(GATE_COLORS)], "-"


def _subset(p) -> str:
    n = {r["config"].get("curve_dev_examples") for r in p.records}
    return f"curve dev subset of {n.pop()} examples" if len(n) == 1 and None not in n else "curve on dev"


def plot_curves(p, path: Path, base: dict) -> Path | None:
    """(d) dev metric vs step (top) and gates' removed fraction vs step (bottom), one column per task."""
    shown = [(t, cs) for t in p.tasks if (cs := _settings_with_curves(p, t))]
    if not shown:
        print(f"finetune figures [{p.name}]: no training curves recorded; skipping (d)")
        return None
    gated = any(c.is_gates for _, cs in shown for c in cs)
    plt = pyplot()
    fig, axes = plt.subplots(
        1 + gated, len(shown), figsize=(max(4.6 * len(shown), 10.0), 3.6 * (1 + gated) + 1.0), squeeze=False
    )
    for j, (task, cells) in enumerate(shown):
        top = axes[0][j]
        for c in cells:
            color, ls = _style(p, c)
            name = c.label if c.keep is None else f"{c.label} keep {c.keep:g}"
            steps, m, s = (np.array(v) for v in mean_curve(c.records))
            top.plot(steps, m, ls=ls, marker=".", ms=3, color=color, label=f"{name} (n={len(c.records)})")
            top.fill_between(steps, m - s, m + s, color=color, alpha=0.15, lw=0)
            if gated and c.is_gates:
                steps, m, s = (np.array(v) for v in mean_curve(c.records, "removed_fraction"))
                axes[1][j].plot(steps, 100 * m, marker=".", ms=3, color=color, label=name)
                axes[1][j].fill_between(steps, 100 * (m - s), 100 * (m + s), color=color, alpha=0.15, lw=0)
                axes[1][j].axhline(100 * mean(c.asked), color=color, ls=":", lw=1)
        trivial_line(top, base.get(task))
        top.set(title=task, xlabel="training step", ylabel=f"dev {metric(p, task)} ({_subset(p)})")
        if gated:
            axes[1][j].set(
                title=f"{task}: gates", xlabel="training step", ylabel="% gated weights removed (eval gates)"
            )
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    for row in axes:  # one legend per row, in its first panel with labelled lines (columns share the settings)
        first = next((ax for ax in row if ax.get_legend_handles_labels()[0]), None)
        if first is not None:
            first.legend(fontsize=7, loc="best")
    return save(
        fig,
        path,
        "(d) Dev metric during training, mean ± std over seeds (dashed: trivial baseline)"
        + ("\nbottom: % of gated weights removed (dotted: asked)" if gated else "")
        + f"\n{setting(p)}",
    )


def plot_kurtosis_layers(p, path: Path) -> Path | None:
    """(f) per task and kurtosis setting: plain | kurtosis-weighted | difference of per-layer kept fractions."""
    rows = []
    for k, plain in tables.kurtosis_pairs(p):
        for t in p.tasks:
            ck, cp = p.cell(t, *k), p.cell(t, *plain)
            if ck and cp and any(r.get("layers") for r in ck.records) and any(r.get("layers") for r in cp.records):
                rows.append((t, cp, ck))
    if not rows:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(len(rows), 3, figsize=(15.0, 4.6 * len(rows) + 0.8), squeeze=False)
    for (task, cp, ck), ax in zip(rows, axes):
        (names_p, _, grid_p), (names_k, _, grid_k) = kept_fractions(cp.records), kept_fractions(ck.records)
        for a, c, names, grid in ((ax[0], cp, names_p, grid_p), (ax[1], ck, names_k, grid_k)):
            heatmap(
                a,
                grid,
                names,
                f"{task}: {c.label}, keep {c.keep:g}\n{100 * c.mean('removed_fraction'):.1f}% "
                f"removed, {len(c.records)} seed(s)",
            )
        if names_p == names_k and grid_p.shape == grid_k.shape:
            heatmap(ax[2], grid_k - grid_p, names_p, f"{task}: kurtosis − plain", diff=True)
        else:
            ax[2].set_visible(False)
    return save(
        fig,
        path,
        "(f) Per-layer kept fraction of rows and columns (eval gates), mean over seeds: "
        f"plain target-keep vs kurtosis-weighted\n{setting(p)}",
    )


def write_plateau_table(p, path: Path) -> Path | None:
    """results/finetune/<p>_plateau.md from the records' curves; None (no file) for curves too short to tell."""
    table = tables.plateau_table(p)
    if table is None:
        return None
    text = [
        f"# When the dev curves of protocol `{p.name}` reach their plateau",
        "",
        "Generated by `make figures` (`python -m analysis.finetune.figures`) from "
        f"`results/finetune/{p.path.name}` alone (do not edit).",
        f"Per task and setting, the dev curve (the bounded dev subset evaluated during training) is averaged "
        f"over seeds; its plateau is the mean of its last {PLATEAU_TAIL} points. 'first within': the first "
        f"step where the mean curve is within {PLATEAU_TOL:g} points of the plateau; 'stays within ... from': "
        "the first step after which it never leaves that band (ep = epochs).",
        "",
        tables.describe(p),
        table,
        "",
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(text))
    return path
