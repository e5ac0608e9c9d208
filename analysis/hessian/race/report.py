"""The race's table and figure, drawn from its results JSON alone (`python -m analysis.figures --only hessian-race`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from analysis.constants import repo_path, study_results
from analysis.provenance import warn_if_dirty

from .config import FIGURE


def _cell(x: dict) -> str:
    """'first crossing (k/n); stays below (k/n)' over the seeds."""
    stay = x.get("stays_below")
    out = f"{_pm(x)} ({x['reached']}/{x['of']})"
    return out if stay is None else out + f"; stays: {_pm(stay)} ({stay['reached']}/{x['of']})"


def _pm(s: dict, fmt: str = ".0f") -> str:
    if not s or s.get("mean") is None:
        return "not reached"
    return f"{s['mean']:{fmt}} ± {s['std']:{fmt}}"


def table(rec: dict, source: str = "") -> str:
    """The markdown table of a race record (`source`: the JSON it comes from, as shown)."""
    cfg, summ, st = rec["config"], rec["summary"], rec["setting"]
    thr = list(next(iter(summ.values()))["steps_to"])
    lines = [
        f"# Steps to a training loss: {' vs '.join(summ)} ({st['task']}, issue 13 item 1(d))",
        "",
        f"Generated from `{source}` (do not edit; `python -m analysis.figures --only hessian-race`); "
        f"command: `{rec['command']}`.",
        "",
        f"Same start (pretrained {cfg['model']}, head {st['head']}), same batches per seed "
        f"({'checked' if st['same_batches_per_seed'] else 'NOT the same'}), {st['optimizer']}, {cfg['steps']} steps of "
        f"{cfg['batch']}; objective: {st['objective']}. Eval loss: {st['eval_examples']} fixed training examples, "
        f"{st['eval_forward']}. Best lr: {st['lr_criterion']}, on seed {cfg['tune_seed']}; then seeds "
        f"{', '.join(map(str, cfg['seeds']))}. Steps to a level: the first evaluated step at or below it (every "
        f"{cfg['eval_every']} steps), mean ± std over the seeds that reached it (reached/seeds); 'stays': the first "
        "step from which the loss stays at or below it to the last step.",
        "",
        "| adapters | n | best lr | grid (lr: final eval loss) | start | "
        + " | ".join(f"steps to {t}" for t in thr)
        + " | final eval loss |",
        "|---|---|---|---|---|" + "---|" * len(thr) + "---|",
    ]
    for preset, s in summ.items():
        grid = ", ".join(f"{k}: {'div.' if v is None else f'{v:.3f}'}" for k, v in s["grid_criterion"].items())
        cells = [_cell(s["steps_to"][t]) for t in thr]
        lines.append(
            f"| {preset} | {s['trainable']:,} | {s['best_lr']:g}{' (grid edge)' if s['best_at_grid_edge'] else ''} | "
            f"{grid} | "
            f"{s['start_eval_loss']['mean']:.4f} | " + " | ".join(cells) + f" | {_pm(s['final_eval_loss'], '.4f')} |"
        )
    return "\n".join(lines) + "\n"


def figure(rec: dict, path: Path) -> Path:
    """Eval loss vs step (mean, min-max over seeds shaded, threshold lines), the running training loss, the lr grids."""
    import matplotlib.pyplot as plt

    cfg, summ = rec["config"], rec["summary"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [2, 2, 1.2]})
    colors = {"gates": "tab:blue", "lora": "tab:orange"}
    for preset, s in summ.items():
        c = colors.get(s["method"], None)
        runs = [
            r
            for r in rec["runs"]
            if r["adapters"] == preset
            and r["lr"] == s["best_lr"]
            and r["seed"] in s["seeds"]
            and (r["phase"] == "seed" or r["seed"] == cfg["tune_seed"])
        ]
        runs = list({r["seed"]: r for r in runs}.values())
        steps = runs[0]["steps"]
        ev = np.array(
            [
                [np.nan if v is None else v for v in r["eval_loss"]] + [np.nan] * (len(steps) - len(r["eval_loss"]))
                for r in runs
            ]
        )
        lab = f"{preset} (n={s['trainable']:,}), lr {s['best_lr']:g}, {len(runs)} seeds"
        axes[0].plot(steps, np.nanmean(ev, 0), color=c, lw=2, label=lab)
        axes[0].fill_between(steps, np.nanmin(ev, 0), np.nanmax(ev, 0), color=c, alpha=0.25, lw=0)
        k = max(1, cfg["steps"] // 15)
        tr = [np.convolve(r["train_loss"], np.ones(k) / k, mode="valid") for r in runs if len(r["train_loss"]) >= k]
        m = min(len(x) for x in tr)
        tr = np.array([x[:m] for x in tr])
        xs = np.arange(k, k + m)
        axes[1].plot(xs, tr.mean(0), color=c, lw=1.5, label=f"{preset}, lr {s['best_lr']:g}")
        axes[1].fill_between(xs, tr.min(0), tr.max(0), color=c, alpha=0.2, lw=0)
        g = sorted((float(lr), v) for lr, v in s["grid_criterion"].items())
        axes[2].plot([x for x, _ in g], [np.nan if v is None else v for _, v in g], "o-", color=c, label=preset)
        axes[2].plot([s["best_lr"]], [s["grid_criterion"][f"{s['best_lr']:g}"]], "*", ms=14, color=c)
    for t in cfg["thresholds"]:
        axes[0].axhline(t, color="gray", lw=0.7, ls="--")
        axes[0].text(axes[0].get_xlim()[1], t, f" {t:g}", va="center", fontsize=7, color="gray")
    axes[0].set(
        xlabel="step",
        ylabel="eval loss (fixed training examples, eval forward)",
        title="Eval loss at each method's best lr (mean; min-max over seeds)",
    )
    axes[1].set(
        xlabel="step",
        ylabel=f"training loss (moving mean of {max(1, cfg['steps'] // 15)} steps)",
        title="Running training loss (as trained: gates with noise)",
    )
    axes[2].set(
        xscale="log",
        xlabel="AdamW lr",
        ylabel="eval loss at the last step",
        title=f"lr grid, seed {cfg['tune_seed']} (star: chosen)",
    )
    for ax in axes:
        ax.legend(fontsize=7)
        ax.title.set_fontsize(9)
    st = rec["setting"]
    fig.suptitle(
        f"{st['task']}: steps to a training loss; same AdamW, start and batches; task loss only (no sparsity "
        f"penalty); head {st['head']}",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def make_figures(results_dir, figures_dir, write_table: bool = True) -> list[Path]:
    """`python -m analysis.figures --only hessian-race`: every results/hessian/race_*.json -> its figure (+ table)."""
    made = []
    for p in sorted(study_results("hessian", results_dir).glob("race_*.json")):
        rec = json.loads(p.read_text())
        warn_if_dirty(p, rec)
        made.append(figure(rec, Path(figures_dir) / rec["config"].get("figure", FIGURE)))
        if write_table:
            p.with_suffix(".md").write_text(table(rec, repo_path(p)))
    if not made:
        print("hessian-race: no results/hessian/race_*.json yet (python -m analysis.hessian.race)")
    return made
