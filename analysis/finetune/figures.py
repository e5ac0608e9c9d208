"""Figures and the GLUE table of the finetuning study, drawn from results/finetune/*.jsonl only.

    python -m analysis.finetune.figures [--results results] [--figures figures]

Per protocol file <p> (e.g. cpu, convergence-check, cpu-converged) it writes:
  figures/finetune_<p>_tradeoff.png   (a) dev metric vs % of gated weights removed, per task and GLUE average;
                                          LoRA / full / bias / head as horizontal lines (band: +-1 std over seeds),
                                          the trivial (constant-prediction) baseline as a dashed gray line
  figures/finetune_<p>_params.png     (b) dev metric vs trainable parameters (log scale), per method
  figures/finetune_<p>_layers.png     (c) per-layer kept fraction of rows and columns by module type
  figures/finetune_<p>_curves.png     (d) dev metric (curve dev subset) vs step for every method, and the gates'
                                          removed fraction vs step (analysis.finetune.curves)
  figures/finetune_<p>_kurtosis_layers.png  (f) per-layer kept fractions, plain vs kurtosis-weighted gates
  results/finetune/<p>_plateau.md     the step at which each method's mean dev curve reaches its plateau
  figures/finetune_sizes.png          gates minus LoRA / bias vs model size, once cpu-fair and cpu-base both have
                                          records (analysis.finetune.sizes)
  results/glue_table.md               (e) the GLUE table of every protocol, with the trivial baseline, asked vs
                                          got removed fractions, paired seed differences and kurtosis vs plain
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from analysis.cli import add_options, from_args, option
from analysis.constants import FIGURES, REFERENCE_METHODS, RESULTS
from analysis.finetune import curves, search_tables, sizes, tables
from analysis.finetune.plotting import (
    GATE_COLORS,
    REF_STYLE,
    heatmap,
    kept_fractions,
    metric,
    save,
    setting,
    subplot_grid,
    trivial_line,
)
from analysis.finetune.results import Protocol, load_protocols
from analysis.finetune.stats import baselines

CURVE_KEEP = 0.7  # the gate setting shown in (c): the keep target closest to this


def _gate_labels(p: Protocol) -> list[str]:
    return [lab for lab in p.labels if any(c.label == lab and c.is_gates for c in p.cells)]


def _panels(p: Protocol) -> list[tuple[str, callable]]:
    """(title, series getter) per task, plus the GLUE average when every task has the setting."""
    out = [(t, lambda label, keep=None, t=t: p.cell(t, label, keep)) for t in p.tasks]
    if len(p.tasks) > 1:
        out.append((tables.average_name(p), lambda label, keep=None: p.glue_average(label, keep)))
    return out


def plot_tradeoff(p: Protocol, path: Path, base: dict) -> Path:
    """(a) dev metric vs % of gated weights removed; references as horizontal lines with +-std bands."""
    panels = _panels(p)
    fig, axes = subplot_grid(len(panels))
    for ax, (title, get) in zip(axes, panels):
        trivial_line(ax, tables.glue_average_baseline(p, base) if title == tables.average_name(p) else base.get(title))
        for label in [lab for lab in p.labels if lab.split()[0] in REFERENCE_METHODS]:
            c = get(label)
            if c is None or not c.dev:
                continue
            color, ls = REF_STYLE.get(c.method, ("gray", "-."))
            m, s = c.mean(), c.std()
            ax.axhline(m, color=color, ls=ls, lw=1.2, label=f"{label} {m:.1f}")
            ax.axhspan(m - s, m + s, color=color, alpha=0.12, lw=0)
        x_max = 0.0
        for i, label in enumerate(_gate_labels(p)):
            cells = [c for c in (get(label, k) for k in p.keeps(label)) if c is not None and c.dev]
            if not cells:
                continue
            x = [100 * c.mean("removed_fraction") for c in cells]
            x_max = max([x_max, *x])
            ax.errorbar(
                x,
                [c.mean() for c in cells],
                yerr=[c.std() for c in cells],
                xerr=[100 * c.std("removed_fraction") for c in cells],
                marker="o",
                ms=4,
                capsize=2,
                color=GATE_COLORS[i % len(GATE_COLORS)],
                label=label,
            )
            for c, xi in zip(cells, x):
                ax.annotate(f"{c.keep:g}", (xi, c.mean()), textcoords="offset points", xytext=(3, 3), fontsize=7)
        ax.set_xlim(-2, max(50.0, x_max + 5))
        ax.set(title=title, xlabel="% of gated weights removed (eval gates)", ylabel=f"dev {metric(p, title)} (points)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return save(
        fig,
        path,
        "(a) Sparsity-accuracy trade-off: gates at keep targets (annotated) vs references "
        f"and the trivial baseline (dashed), mean ± std over seeds\n{setting(p)}",
    )


def plot_params(p: Protocol, path: Path) -> Path:
    """(b) dev metric vs trainable parameters (log x), one marker per method label (and keep)."""
    panels = _panels(p)
    fig, axes = subplot_grid(len(panels))
    gate_labels = _gate_labels(p)
    for ax, (title, get) in zip(axes, panels):
        for label in p.labels:
            cells = [c for c in (get(label, k) for k in p.keeps(label)) if c is not None and c.dev]
            for j, c in enumerate(cells):
                color = (
                    GATE_COLORS[gate_labels.index(label) % len(GATE_COLORS)] if c.is_gates else REF_STYLE[c.method][0]
                )
                ax.errorbar(
                    [c.trainable],
                    [c.mean()],
                    yerr=[c.std()],
                    marker="s" if c.is_gates else "o",
                    ms=5,
                    capsize=2,
                    color=color,
                    alpha=1.0 if not c.is_gates else 0.4 + 0.6 * (j + 1) / len(cells),
                    label=label if j == 0 else None,
                )
        ax.set_xscale("log")
        ax.set(title=title, xlabel="trainable parameters (log scale)", ylabel=f"dev {metric(p, title)} (points)")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, loc="lower right")
    return save(
        fig,
        path,
        "(b) Dev metric vs trainable parameters, mean ± std over seeds "
        f"(gate markers: darker = lower keep target)\n{setting(p)}",
    )


def _curve_cell(p: Protocol, task: str):
    """The gate cell shown in (c): first gate label, keep closest to CURVE_KEEP."""
    cells = [c for c in p.cells if c.task == task and c.is_gates and c.keep is not None]
    labels = _gate_labels(p)
    if not cells:
        return None
    return min(cells, key=lambda c: (labels.index(c.label), abs(c.keep - CURVE_KEEP)))


def plot_layers(p: Protocol, path: Path) -> Path | None:
    """(c) heatmap per task: kept fraction of rows / columns by module type (y) and layer (x)."""
    shown = [
        (t, c) for t in p.tasks if (c := _curve_cell(p, t)) is not None and any(r.get("layers") for r in c.records)
    ]
    if not shown:
        print(f"finetune figures [{p.name}]: no per-layer gate records; skipping (c)")
        return None
    fig, axes = subplot_grid(len(shown), width=4.6, height=4.4)
    for ax, (task, c) in zip(axes, shown):
        names, _, grid = kept_fractions(c.records)
        heatmap(
            ax,
            grid,
            names,
            f"{task}: {c.label}, keep {c.keep:g}\n{100 * c.mean('removed_fraction'):.0f}% "
            f"gated weights removed, {len(c.records)} seed(s)",
        )
    return save(
        fig, path, f"(c) Per-layer kept fraction of rows and columns (eval gates), mean over seeds\n{setting(p)}"
    )


def protocol_section(p: Protocol, base: dict) -> list[str]:
    """The markdown of one protocol in glue_table.md: what produced it, its table, then its comparisons."""
    title = f"## Protocol `{p.name}`"
    parts = [title, "", tables.describe(p), tables.glue_table(p, base), ""]
    for heading, table in (
        (
            "Removed fraction of the gated weights, % asked → got (mean ± std over seeds)",
            search_tables.removal_table(p),
        ),
        ("Over all gate runs", search_tables.removal_summary(p)),
        (
            "The final correction, where it changed gates: before → after (→ after the recovery phase)",
            search_tables.correction_table(p),
        ),
        (
            "Learning rates chosen on val by the grid rule (first seed; later seeds train the choice)",
            search_tables.search_table(p),
        ),
        (
            "The gate settings searched (first seed): what training removed, what the correction did",
            search_tables.gate_search_table(p),
        ),
        ("Paired differences, gates minus reference (seed s minus seed s; dev points)", tables.paired_table(p)),
        ("Kurtosis-weighted vs plain target-keep gates (issue 16; seed s minus seed s)", tables.kurtosis_table(p)),
    ):
        if table:
            parts += [f"### {heading}", "", table, ""]
    return parts


def write_glue_table(protocols: list[Protocol], path: Path, bases: dict) -> Path:
    """(e) results/glue_table.md: one section per protocol, with where its numbers come from."""
    parts = [
        "# GLUE dev results of the finetuning protocols",
        "",
        "Generated by `make figures` (`python -m analysis.finetune.figures`) from `results/finetune/*.jsonl`",
        "alone (do not edit). Cells: dev main metric in points (accuracy; F1 for MRPC; Matthews x100 for",
        "CoLA; Pearson x100 for STS-B), mean ± std over seeds. GLUE avg: per seed, the mean over the tasks",
        "of the protocol. Trivial row: the best constant prediction scored on the task's dev labels (majority",
        "class for accuracy, always-positive for F1; 0 for Matthews and Pearson).",
        "% gated removed: eval-gate removed fraction of the gated weight matrices, asked (1 − keep) → got,",
        "over tasks and seeds. Speedup: dense / compressed latency at batch 32 on the CPU of the run.",
        "",
    ]
    for p in protocols:
        parts += protocol_section(p, bases[p.name])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts))
    return path


def glue_block(results_dir, protocol: str, details: bool = False) -> str | None:
    """One protocol's GLUE table, as docs/results.md shows it (its generated part), or None without its records;
    with `details`, followed by the paired differences, the removed fractions and the corrections."""
    p = next((p for p in load_protocols(results_dir) if p.name == protocol), None)
    if p is None:
        return None
    parts = [tables.glue_table(p, baselines(p))]
    if details:
        for heading, table in (
            ("Gates minus each reference, paired by seed (dev points)", tables.paired_table(p)),
            ("Removed fraction of the gated weights, % asked → got", search_tables.removal_table(p)),
            ("Over all gate runs", search_tables.removal_summary(p)),
            ("Where the final correction changed gates", search_tables.correction_table(p)),
        ):
            if table:
                parts += ["", f"**{heading}:**", "", table]
    return "\n".join(parts)


def make_figures(results_dir, figures_dir, table_dir=None) -> list[Path]:
    """Draw (a)-(d), (f) per protocol and write (e) and the plateau tables under table_dir (default: results_dir);
    skip (printing why) without records."""
    results_dir, figures_dir = Path(results_dir), Path(figures_dir)
    protocols = load_protocols(results_dir)
    if not protocols:
        print(
            f"finetune figures: no records in {results_dir / 'finetune'}/*.jsonl; "
            "skipping (run python -m analysis.finetune first)"
        )
        return []
    bases = {p.name: baselines(p) for p in protocols}
    tables_dir = Path(table_dir or results_dir)
    made = [write_glue_table(protocols, tables_dir / "glue_table.md", bases)]
    for p in protocols:
        stem = figures_dir / f"finetune_{p.name}"
        base = bases[p.name]
        made += [
            plot_tradeoff(p, Path(f"{stem}_tradeoff.png"), base),
            plot_params(p, Path(f"{stem}_params.png")),
            plot_layers(p, Path(f"{stem}_layers.png")),
            curves.plot_curves(p, Path(f"{stem}_curves.png"), base),
            curves.plot_kurtosis_layers(p, Path(f"{stem}_kurtosis_layers.png")),
            curves.write_plateau_table(p, tables_dir / "finetune" / f"{p.name}_plateau.md"),
        ]
    ps = sizes.pick(protocols)
    if ps is not None:
        made.append(sizes.plot_sizes(ps, figures_dir / "finetune_sizes.png"))
    return [m for m in made if m is not None]


@dataclass(frozen=True)
class FiguresConfig:
    results: Path = option(RESULTS, "folder holding finetune/*.jsonl")
    figures: Path = option(FIGURES, "where the PNGs go")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(ap, FiguresConfig)
    cfg = from_args(FiguresConfig, ap.parse_args(argv))
    for path in make_figures(cfg.results, cfg.figures):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
