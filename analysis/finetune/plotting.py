"""Plotting helpers shared by the finetuning figures (figures.py, curves.py): styles, the setting line every figure
carries, saving, the trivial baseline, per-layer kept fractions and their heatmap."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import seaborn as sns

from analysis.finetune.results import Protocol
from analysis.plotting import save_figure

TRIVIAL_STYLE = dict(color="dimgray", ls=(0, (5, 3)), lw=1.3)
REF_STYLE = {"lora": ("tab:blue", "-"), "full": ("black", "-"), "bias": ("tab:orange", "--"), "head": ("tab:gray", ":")}
GATE_COLORS = ("tab:green", "tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")
# module type from the end of a gated layer's name (BERT and LLaMA names), in the order drawn
MODULE_TYPES = (
    ("query", r"query|q_proj"),
    ("key", r"key|k_proj"),
    ("value", r"value|v_proj"),
    ("attn out", r"attention\.output\.dense|o_proj"),
    ("ffn gate", r"gate_proj"),
    ("ffn up", r"intermediate\.dense|up_proj"),
    ("ffn down", r"(?<!attention\.)output\.dense|down_proj"),
)


def pyplot():
    """matplotlib.pyplot on the Agg backend (figures are written to files, never shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def subplot_grid(n: int, width=4.2, height=3.4):
    """A figure of n panels in rows of at most three (the unused cells hidden): (figure, [axes])."""
    plt = pyplot()
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(
        rows, cols, figsize=(max(width * cols, 9.0), height * rows + 0.6), squeeze=False
    )  # room for the title
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:n])


def train_examples(p: Protocol) -> str:
    """'800 train examples', or per task where they differ ('train examples: SST-2 20000, MRPC all')."""
    n = {}
    for r in p.records:
        n.setdefault(str(r["config"].get("task")), r["config"].get("train_examples"))
    shown = {t: "all" if v is None else str(v) for t, v in n.items()}
    if len(set(shown.values())) == 1:
        return f"{shown.popitem()[1]} train examples"
    return "train examples: " + ", ".join(f"{t} {v}" for t, v in shown.items())


def setting(p: Protocol) -> str:
    r = p.records[0]
    cfg = r["config"]
    return (
        f"{Path(str(cfg.get('model', '?'))).name}, {train_examples(p)}, "
        f"pooling={cfg.get('pooling')}, {p.name} protocol on "
        f"{r.get('gpu') or r.get('device', '?')}"
    )


def metric(p: Protocol, task: str) -> str:
    names = {(r.get("task_info") or {}).get("metric") for r in p.records if r["config"].get("task") == task}
    return names.pop() if len(names) == 1 and None not in names else "main metric"


def save(fig, path: Path, title: str) -> Path:
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path)


def trivial_line(ax, value: float | None) -> None:
    """The trivial (constant-prediction) baseline of a panel, if known."""
    if value is not None:
        ax.axhline(value, **TRIVIAL_STYLE, label="trivial (constant prediction)")
        ax.annotate(
            f"trivial {value:.1f}",
            xy=(0.99, value),
            xycoords=("axes fraction", "data"),
            ha="right",
            va="bottom",
            fontsize=7,
            color=TRIVIAL_STYLE["color"],
        )


def module_type(name: str) -> tuple[int, str] | None:
    """(layer index, module type) of a gated layer's dotted name, or None if it has no layer index."""
    m = re.search(r"\.(\d+)\.(.+)$", name)
    if m is None:
        return None
    for label, pat in MODULE_TYPES:
        if re.search(r"(?:^|\.)(?:" + pat + r")$", m.group(2)):
            return int(m.group(1)), label
    return int(m.group(1)), m.group(2)


def kept_fractions(records: list[dict]) -> tuple[list[str], int, np.ndarray]:
    """Row labels '<type> rows|cols', layer count, and the mean kept fraction per (row label, layer)."""
    acc: dict[tuple[str, int], list[float]] = {}
    for r in records:
        for rec in r.get("layers") or []:
            mt = module_type(rec["name"])
            if mt is None:
                continue
            layer, kind = mt
            acc.setdefault((f"{kind} rows", layer), []).append(rec["rows_kept"] / rec["out_features"])
            acc.setdefault((f"{kind} cols", layer), []).append(rec["cols_kept"] / rec["in_features"])
    order = [f"{k} {side}" for k, _ in MODULE_TYPES for side in ("rows", "cols")]
    names = sorted({k for k, _ in acc}, key=lambda k: (order.index(k) if k in order else len(order), k))
    n_layers = max((layer for _, layer in acc), default=-1) + 1
    grid = np.full((len(names), n_layers), np.nan)
    for (k, layer), v in acc.items():
        grid[names.index(k), layer] = float(np.mean(v))
    return names, n_layers, grid


def heatmap(ax, grid: np.ndarray, names: list[str], title: str, diff: bool = False) -> None:
    """One kept-fraction heatmap (module type x layer); `diff`: a difference of two, on a diverging scale."""
    span = max(0.1, float(np.nanmax(np.abs(grid)))) if diff and np.isfinite(grid).any() else 0.5
    kw = dict(vmin=-span, vmax=span, cmap="RdBu", center=0.0) if diff else dict(vmin=0, vmax=1, cmap="viridis")
    sns.heatmap(
        grid,
        annot=True,
        fmt=".2f",
        annot_kws={"fontsize": 6},
        xticklabels=range(grid.shape[1]),
        yticklabels=names,
        cbar_kws={"label": "kept fraction" + (" difference" if diff else "")},
        ax=ax,
        **kw,
    )
    ax.tick_params(axis="y", labelsize=7, rotation=0)
    ax.set(xlabel="layer", title=title)
    ax.title.set_fontsize(9)
