"""Figures of the gate-convergence study, drawn from results/convergence/*.json only."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from analysis.constants import study_results
from analysis.provenance import warn_if_dirty

PROBLEMS = ("linear", "mlp", "lowrank")
SWEEPS = ("sigma", "sigma_lam0", "reg_sigma", "lam", "optimizer", "grad", "lr", "init_mean", "n")  # file suffixes
COLORS = {"gates": "tab:blue", "lora": "tab:orange"}


def _load(results_dir: Path, name: str) -> dict | None:
    path = study_results("convergence", results_dir) / f"{name}.json"
    if not path.exists():
        return None
    rec = json.loads(path.read_text())
    warn_if_dirty(path, rec)
    return rec


def _settings(cfg: dict) -> str:
    return (
        f"{cfg['optimizer']} lr {cfg['lr'] or 'default'}, sigma {cfg['sigma']}, reg_sigma {cfg['reg_sigma']}, "
        f"lam {cfg['lam']} ({cfg['objective']}), m=n={cfg['m']}x{cfg['n']}, N={cfg['samples']}, "
        f"{cfg['seeds']} seeds"
    )


def _band(ax, x, b, color, label):
    f = lambda k: np.array(b[k], dtype=float)  # noqa: E731  (null -> NaN: not drawn)
    ax.plot(x, f("center"), color=color, label=label)
    ax.fill_between(x, f("lo"), f("hi"), color=color, alpha=0.2, lw=0)


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
        ax.plot(x, y0 / x**2, "k--", lw=1, label="reference 1/t^2")
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="step (step 0 drawn at 1)",
            ylabel="F - F*",
            title=f"{prob}: objective gap F(theta_t) - F*",
            ylim=(1e-16, None),
        )
        ax.legend(fontsize=7)
    fig.suptitle(
        "Expected objective gap, gates vs LoRA; " + _settings(next(iter(runs.values()))["groups"][0]["config"]),
        fontsize=9,
    )
    fig.tight_layout()
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
        axes[1, j].set(
            xscale="log",
            yscale="log",
            xlabel="step",
            ylabel="||grad F||^2 / (2 (F - F*))",
            title=f"{prob}: empirical PL ratio (PL: bounded below)",
        )
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
        axes[0, j].set(
            xscale="log",
            ylabel="eval gate clamp(mu + 0.5, 0, 1)",
            ylim=(-0.05, 1.05),
            title=f"{prob}: gate trajectories (seed 0)",
        )
        axes[0, j].legend(fontsize=8)
        for k, c in (("binary", "k"), ("precision", "tab:purple"), ("recall", "tab:cyan")):
            _band(axes[1, j], x, s[k], c, k)
        axes[1, j].set(
            xscale="log",
            xlabel="step",
            ylabel="fraction",
            ylim=(-0.05, 1.05),
            title=f"{prob}: binary gates and removed-support recovery",
        )
        axes[1, j].legend(fontsize=8)
    fig.suptitle("Gates converge to 0/1; " + _settings(runs[probs[0]]["groups"][0]["config"]), fontsize=9)
    fig.tight_layout()
    return _save(fig, figures_dir, "convergence_gate_trajectories.png")


def _errbar(ax, x, v, color, label, center=np.nanmedian):
    """Center and min-max over seeds of v (settings x seeds), NaN-aware."""
    v = np.asarray(v, float)
    with warnings.catch_warnings():  # a setting where every seed is undefined (NaN) is simply not drawn
        warnings.simplefilter("ignore", RuntimeWarning)
        c, lo, hi = center(v, 1), np.nanmin(v, 1), np.nanmax(v, 1)
    ax.errorbar(x, c, [c - lo, hi - c], color=color, marker="o", capsize=3, label=label)


def _sweep_grid(sweeps: dict, draw, ylabel: str, title: str, figures_dir: Path, name: str) -> Path:
    """One panel per sweep (2 rows); `draw(ax, groups, x)` plots one sweep."""
    import matplotlib.pyplot as plt

    cols = (len(sweeps) + 1) // 2
    base = next(iter(sweeps.values()))["config"]
    fig, axes = plt.subplots(2, cols, figsize=(3.6 * cols, 6.8), squeeze=False, sharey=True)
    for ax, (key, res) in zip(axes.flat, sweeps.items()):
        groups = res["groups"]
        x = np.arange(len(groups))
        draw(ax, groups, x)
        ax.set_xticks(x, [str(g["value"]) for g in groups])
        ax.set_xlabel(res["sweep"])
        changed = {k: v for k, v in res["config"].items() if k not in (res["sweep"], "methods") and v != base[k]}
        ax.set_title(f"sweep {res['sweep']}" + "".join(f", {k}={v}" for k, v in changed.items()), fontsize=10)
    for ax in axes.flat[len(sweeps) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel)
    n_first = len(axes[0, 0].get_legend_handles_labels()[0])
    for ax in axes.flat:  # a legend on the first panel and wherever more curves appear
        if ax is axes[0, 0] or len(ax.get_legend_handles_labels()[0]) > n_first:
            ax.legend(fontsize=7)
    fig.suptitle(
        f"{title}\nplanted {base['problem']} problem, {base['steps']} steps; other settings as in the "
        "panel title, else: " + _settings(base),
        fontsize=9,
    )
    fig.tight_layout()
    return _save(fig, figures_dir, name)


def _recovery(ax, groups, x):
    for k, c in (("precision", "tab:purple"), ("recall", "tab:cyan"), ("binary", "k")):
        _errbar(ax, x, [[f[k] for f in g["methods"]["gates"]["final"]] for g in groups], c, k, np.nanmean)


def _per_method(rate_key):
    def draw(ax, groups, x):
        for m in groups[0]["methods"]:
            v = [[np.nan if r[rate_key] is None else r[rate_key] for r in g["methods"][m]["rates"]] for g in groups]
            _errbar(ax, x, v, COLORS[m], m)
        if rate_key == "lojasiewicz":
            ax.axhline(0.5, color="gray", ls=":", lw=1)

    return draw


def sweep_figures(sweeps: dict, figures_dir: Path) -> list[Path]:
    return [
        _sweep_grid(
            sweeps,
            _recovery,
            "final fraction (mean, min-max)",
            "Gates: removed-support precision / recall and binary fraction at the end",
            figures_dir,
            "convergence_recovery.png",
        ),
        _sweep_grid(
            sweeps,
            _per_method("decades_total"),
            "log10 gap reduction (median, range)",
            "Orders of magnitude the objective gap fell during the run, gates vs LoRA",
            figures_dir,
            "convergence_rates.png",
        ),
        _sweep_grid(
            sweeps,
            _per_method("lojasiewicz"),
            "theta in ||grad F|| ~ (F - F*)^theta",
            "Lojasiewicz exponent on the late path (PL: theta = 1/2, dotted; missing: gap moved < 1 decade)",
            figures_dir,
            "convergence_lojasiewicz.png",
        ),
    ]


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
        made += sweep_figures(sweeps, figures_dir)
    plt.close("all")
    return made


def summary_table(source) -> str:
    """One line per results file, setting and method: the measured rates and recovery (medians over seeds).

    `source` is a results folder (every <source>/convergence/*.json) or one results file.
    """

    def med(v):
        with warnings.catch_warnings():  # all seeds undefined -> nan, printed as such
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(np.nanmedian(np.array([np.nan if x is None else x for x in v], float)))

    lines = [
        f"{'file / setting':42s} {'method':6s} {'decades':>7s} {'slope p':>7s} {'theta':>6s} {'min PL':>8s} "
        f"{'prec':>5s} {'rec':>5s} {'binary':>6s} {'found@':>6s}"
    ]
    source = Path(source)
    for path in [source] if source.is_file() else sorted(study_results("convergence", source).glob("*.json")):
        res = json.loads(path.read_text())
        for g in res["groups"]:
            name = path.stem + ("" if res["sweep"] is None else f" {res['sweep']}={g['value']}")
            for m, s in g["methods"].items():
                r = s["rates"]
                row = (
                    f"{name:42s} {m:6s} {med([x['decades_total'] for x in r]):7.1f} "
                    f"{med([x['loglog_slope'] for x in r]):7.2f} {med([x['lojasiewicz'] for x in r]):6.2f} "
                    f"{med(s['pl_min_after_1pct']):8.1e}"
                )
                if m == "gates":
                    f = s["final"]
                    row += "".join(f" {np.mean([x[k] for x in f]):5.3f}" for k in ("precision", "recall", "binary"))
                    ok = [
                        t
                        for t, a, b in zip(s["step"], s["precision"]["center"], s["recall"]["center"])
                        if a >= 0.95 and b >= 0.95
                    ]
                    row += f" {ok[0] if ok else '-':>6}"  # first eval step with mean precision and recall >= 0.95
                lines.append(row)
    return "\n".join(lines)
