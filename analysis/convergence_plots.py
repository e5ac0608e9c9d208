"""Figures of the gate-convergence study, drawn from results/convergence_*.json only."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

PROBLEMS = ("linear", "mlp", "lowrank")
SWEEPS = ("sigma", "reg_sigma", "lam", "optimizer", "lr", "n", "init_mean")
COLORS = {"gates": "tab:blue", "lora": "tab:orange"}


def _load(results_dir: Path, name: str) -> dict | None:
    path = Path(results_dir) / f"convergence_{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _settings(cfg: dict) -> str:
    return (f"{cfg['optimizer']} lr {cfg['lr'] or 'default'}, sigma {cfg['sigma']}, reg_sigma {cfg['reg_sigma']}, "
            f"lam {cfg['lam']} ({cfg['objective']}), m=n={cfg['m']}x{cfg['n']}, N={cfg['samples']}, "
            f"{cfg['seeds']} seeds")


def _band(ax, x, b, color, label):
    ax.plot(x, b["center"], color=color, label=label)
    ax.fill_between(x, b["lo"], b["hi"], color=color, alpha=0.2, lw=0)


def _save(fig, figures_dir: Path, name: str) -> Path:
    path = Path(figures_dir) / name
    fig.savefig(path, dpi=130, bbox_inches="tight")
    return path


def gap_figure(runs: dict, figures_dir: Path) -> Path:
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 4), squeeze=False)
    for ax, (prob, res) in zip(axes[0], runs.items()):
        g = res["groups"][0]
        for m, s in g["methods"].items():
            x = np.maximum(s["step"], 1)
            _band(ax, x, s["gap"], COLORS[m], f"{m} (geo-mean, min-max over seeds)")
        s = next(iter(g["methods"].values()))
        x, y0 = np.maximum(s["step"], 1).astype(float), s["gap"]["center"][0]
        ax.plot(x, y0 / x, "k:", lw=1, label="reference 1/t")
        ax.plot(x, y0 / x ** 2, "k--", lw=1, label="reference 1/t^2")
        ax.set(xscale="log", yscale="log", xlabel="step (step 0 drawn at 1)", ylabel="F - F*",
               title=f"{prob}: objective gap F(theta_t) - F*", ylim=(1e-16, None))
        ax.legend(fontsize=7)
    fig.suptitle("Expected objective gap, gates vs LoRA; " + _settings(next(iter(runs.values()))["groups"][0]["config"]),
                 fontsize=9)
    return _save(fig, figures_dir, "convergence_gap.png")


def grad_pl_figure(runs: dict, figures_dir: Path) -> Path:
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(2, len(runs), figsize=(5 * len(runs), 7), squeeze=False)
    for j, (prob, res) in enumerate(runs.items()):
        for m, s in res["groups"][0]["methods"].items():
            x = np.maximum(s["step"], 1)
            _band(axes[0, j], x, s["grad_sq"], COLORS[m], m)
            _band(axes[1, j], x, s["pl_ratio"], COLORS[m], m)
        axes[0, j].set(xscale="log", yscale="log", ylabel="||grad F||^2", title=f"{prob}: squared gradient norm")
        axes[1, j].set(xscale="log", yscale="log", xlabel="step", ylabel="||grad F||^2 / (2 (F - F*))",
                       title=f"{prob}: empirical PL ratio (PL: bounded below)")
        axes[0, j].legend(fontsize=8)
    fig.suptitle("Gradient norm and PL ratio along the path (geo-mean, min-max over seeds)", fontsize=10)
    fig.tight_layout()
    return _save(fig, figures_dir, "convergence_grad_pl.png")


def trajectory_figure(runs: dict, figures_dir: Path) -> Path:
    import matplotlib.pyplot as plt
    probs = [p for p, r in runs.items() if "gates" in r["groups"][0]["methods"] and p != "lowrank"]
    fig, axes = plt.subplots(2, len(probs), figsize=(5 * len(probs), 7), squeeze=False)
    for j, prob in enumerate(probs):
        s = runs[prob]["groups"][0]["methods"]["gates"]
        x, tr = np.maximum(s["step"], 1), s["trajectories_seed0"]
        vals = np.array(tr["values"])
        for k, closed in enumerate(tr["planted_closed"]):
            axes[0, j].plot(x, vals[:, k], color="tab:red" if closed else "tab:green", alpha=0.7, lw=1)
        axes[0, j].plot([], [], color="tab:red", label="planted closed")
        axes[0, j].plot([], [], color="tab:green", label="planted open")
        axes[0, j].set(xscale="log", ylabel="eval gate clamp(mu + 0.5, 0, 1)", ylim=(-0.05, 1.05),
                       title=f"{prob}: gate trajectories (seed 0)")
        axes[0, j].legend(fontsize=8)
        for k, c in (("binary", "k"), ("precision", "tab:purple"), ("recall", "tab:cyan")):
            _band(axes[1, j], x, s[k], c, k)
        axes[1, j].set(xscale="log", xlabel="step", ylabel="fraction", ylim=(-0.05, 1.05),
                       title=f"{prob}: binary gates and removed-support recovery")
        axes[1, j].legend(fontsize=8)
    fig.suptitle("Gates converge to 0/1; " + _settings(runs[probs[0]]["groups"][0]["config"]), fontsize=9)
    fig.tight_layout()
    return _save(fig, figures_dir, "convergence_gate_trajectories.png")


def sensitivity_figure(sweeps: dict, figures_dir: Path) -> Path:
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(3, len(sweeps), figsize=(3.2 * len(sweeps), 8.5), squeeze=False, sharey="row")
    for j, (key, res) in enumerate(sweeps.items()):
        groups = res["groups"]
        labels = [str(g["value"]) for g in groups]
        x = np.arange(len(groups))
        for k, c in (("precision", "tab:purple"), ("recall", "tab:cyan"), ("binary", "k")):
            v = np.array([[f[k] for f in g["methods"]["gates"]["final"]] for g in groups])
            axes[0, j].errorbar(x, v.mean(1), [v.mean(1) - v.min(1), v.max(1) - v.mean(1)], color=c, marker="o",
                                capsize=3, label=k)
        for m in groups[0]["methods"]:
            d = np.array([[r["decades_total"] for r in g["methods"][m]["rates"]] for g in groups])
            t = np.array([[r["lojasiewicz"] for r in g["methods"][m]["rates"]] for g in groups])
            axes[1, j].errorbar(x, np.median(d, 1), [np.median(d, 1) - d.min(1), d.max(1) - np.median(d, 1)],
                                color=COLORS[m], marker="o", capsize=3, label=m)
            axes[2, j].errorbar(x, np.median(t, 1), [np.median(t, 1) - t.min(1), t.max(1) - np.median(t, 1)],
                                color=COLORS[m], marker="o", capsize=3, label=m)
        axes[2, j].axhline(0.5, color="gray", ls=":", lw=1)
        for i in range(3):
            axes[i, j].set_xticks(x, labels)
        axes[0, j].set_title(f"sweep {key}", fontsize=10)
        axes[2, j].set_xlabel(key)
    axes[0, 0].set_ylabel("final fraction\n(mean, min-max)")
    axes[1, 0].set_ylabel("decades of gap reduced\n(median, min-max)")
    axes[2, 0].set_ylabel("Lojasiewicz theta\n(||grad F|| ~ gap^theta; PL: 1/2)")
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].legend(fontsize=7)
    cfg = next(iter(sweeps.values()))["config"]  # the base settings, before the sweep changed one
    fig.suptitle(f"Sensitivity on the planted {cfg['problem']} problem; other settings at the defaults: "
                 + _settings(cfg), fontsize=9)
    fig.tight_layout()
    return _save(fig, figures_dir, "convergence_sensitivity.png")


def make_figures(results_dir, figures_dir) -> list[Path]:
    """Every convergence figure whose results exist; nothing is drawn from data that is not in results_dir."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    Path(figures_dir).mkdir(parents=True, exist_ok=True)
    runs = {p: r for p in PROBLEMS if (r := _load(results_dir, p)) is not None}
    sweeps = {k: r for k in SWEEPS if (r := _load(results_dir, f"linear_{k}")) is not None}
    made = []
    if runs:
        made += [gap_figure(runs, figures_dir), grad_pl_figure(runs, figures_dir)]
        if any(p != "lowrank" for p in runs):
            made.append(trajectory_figure(runs, figures_dir))
    if sweeps:
        made.append(sensitivity_figure(sweeps, figures_dir))
    plt.close("all")
    return made
