"""`make figures` for the decoder study: perplexity vs removed fraction (trained gates vs two pruning baselines),
with the measured decode speedup of the compressed model on a second axis; the finetuning val curves
(analysis/decoder/finetune_report.py). Reads results/decoder/ only."""

from __future__ import annotations

import json
from pathlib import Path

from analysis.decoder import finetune_report
from analysis.plotting import save_figure
from analysis.provenance import read_jsonl, warn_if_dirty

CURVES = (
    ("gates", "trained gates (LM loss)", "C0", "o-"),
    ("gates_selection", "trained selection, open gates = 1", "C0", "o:"),
    ("magnitude", "magnitude pruning", "C3", "s-"),
    ("activation", "activation-weighted magnitude", "C2", "^-"),
)


def make_figures(results_dir, figures_dir) -> list[Path]:
    return perplexity_figure(results_dir, figures_dir) + finetune_report.make_figure(results_dir, figures_dir)


def perplexity_figure(results_dir, figures_dir) -> list[Path]:
    import matplotlib.pyplot as plt

    path = Path(results_dir) / "decoder" / "sparsify.jsonl"
    recs = read_jsonl(path)
    dense = [r for r in recs if r["kind"] == "dense"]
    stages = sorted((r for r in recs if r["kind"] == "stage"), key=lambda r: r["removed_asked"])
    if not dense or not stages:
        return []
    warn_if_dirty(path, recs)
    base = dense[-1]["ppl"]["ppl"]
    fig, ax = plt.subplots(figsize=(6.6, 4.4))
    for key, label, color, style in CURVES:
        xs = [0.0] + [r["removed_got"] for r in stages]
        ys = [base] + [r["ppl"][key]["ppl"] for r in stages]
        ax.plot(xs, ys, style, color=color, label=label, mfc="none" if ":" in style else color)
    ax.set_yscale("log")
    ax.set_xlabel("fraction of the gated weights removed (got; asked 0.1-0.4)")
    ax.set_ylabel("held-out perplexity (log scale)")
    ax.axhline(base, color="grey", lw=0.8, ls="--", label=f"dense ({base:.1f})")
    speed = [(r["removed_got"], r["decode_speedup"]) for r in stages if "decode_speedup" in r]
    twin = ax.twinx()
    if speed:
        twin.plot(
            [0.0] + [x for x, _ in speed],
            [1.0] + [y for _, y in speed],
            "kd--",
            alpha=0.7,
            label="decode speedup, compressed trained gates (batch 1)",
        )
    gen = Path(results_dir) / "decoder" / "generation_cpu.json"
    if gen.is_file():
        g = json.loads(gen.read_text())
        warn_if_dirty(gen, g)
        row = next((b for b in g["batches"] if b["batch"] == 1), None)
        pts = sorted(
            (p["removed_got"], row[name]["decode_speedup"])
            for name, p in g["patterns"].items()
            if name.startswith("random") and row is not None
        )
        if pts:
            twin.plot(
                [0.0] + [x for x, _ in pts],
                [1.0] + [y for _, y in pts],
                "x:",
                color="grey",
                label="decode speedup, random structured (batch 1)",
            )
    twin.set_ylabel("decode speedup over dense (tokens/s ratio, 1 CPU thread)")
    lines = ax.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7, loc="upper left")
    steps = stages[0]["config"]["steps"]
    ax.set_title(
        f"SmolLM2-135M (Q4_1-dequantized), task-agnostic sparsification\n"
        f"{steps} gate steps per stage on Wikipedia/news sentences; {stages[0]['ppl']['gates']['tokens']:,} "
        "held-out tokens",
        fontsize=9,
    )
    fig.tight_layout()
    return [save_figure(fig, Path(figures_dir) / "decoder_perplexity.png")]
