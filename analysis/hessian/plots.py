"""Figures of the Hessian study, from results/hessian/*.json only (`make figures`; docs/design.md §4, §11).

hessian_densities.png      eigenvalue mass per setting, both methods overlaid (symlog)
hessian_conditioning.png   kappa_eff at two tolerances, lambda_max, negative / zero fractions
hessian_kappa_curves.png   kappa_eff against the tolerance, over the top k, over a mass fraction: curves
hessian_full_sets.png      the full adapter sets, every seed, init vs converged, theta vs dW (the three above are
                           drawn for seed 0 of the full sets); with results/hessian/full_sets.md, its table
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gatecore.hessian import summarize

from .records import group_key, label, load, mass, method_key, record_conditioning, scope
from .tables import FULL, write_full_table


def make_figures(results_dir, figures_dir, table: bool = True) -> list[Path]:
    """Every figure of the study into figures_dir; `table`: also write results/hessian/full_sets.md (its table)."""
    import matplotlib.pyplot as plt

    recs = load(results_dir)
    figures_dir = Path(figures_dir)
    figures_dir.mkdir(parents=True, exist_ok=True)
    if not recs:
        return []
    made = []
    groups = {}
    for r in recs:  # one panel per task / matrices / state / seed / parametrization, the methods overlaid
        if scope(r) == "full sets" and r["seed"] != 0:
            continue  # the full sets' other seeds: hessian_full_sets.png
        if mass(r) is not None:
            groups.setdefault(group_key(r), {})[method_key(r)] = r
    keys = sorted(groups)
    fig, axes = plt.subplots(len(keys), 1, figsize=(8, 2.4 * len(keys)), squeeze=False)
    for ax, key in zip(axes[:, 0], keys):
        top = max(np.abs(mass(r)[0]).max() for r in groups[key].values())
        lo = 1e-6 * top  # the zero tolerance: mass inside it is reported in the legend, not drawn
        edges = np.logspace(np.log10(lo), np.log10(top * 1.01), 22)
        for method, r in sorted(groups[key].items()):
            ev, w, src = mass(r)
            ztol = 1e-6 if src == "exact" else 1e-3  # an SLQ node stands for a cluster: never within 1e-6 of 0
            zero = w[np.abs(ev) <= ztol * np.abs(ev).max()].sum()
            h = [np.histogram(sign * ev, edges, weights=w)[0] for sign in (1, -1)]
            x = np.concatenate([-edges[::-1], edges])
            yv = np.concatenate([h[1][::-1], [0], h[0]])  # the middle bin (-lo, lo) is the zero mass
            ax.stairs(yv, x, lw=1.8, label=f"{label(r)} [{src}], zero mass (|lambda| <= {ztol:g} max) {zero:.0%}")
        ax.set_xscale("symlog", linthresh=lo)
        ticks = [10.0**k for k in range(int(np.ceil(np.log10(top))), int(np.floor(np.log10(lo))), -2)][::-1]
        ax.set_xticks(
            [-t for t in ticks[::-1]] + ticks,
            [f"-1e{np.log10(t):.0f}" for t in ticks[::-1]] + [f"1e{np.log10(t):.0f}" for t in ticks],
            fontsize=7,
        )
        t, layers, state, seed, par, steps = key
        ax.set_title(
            f"{t}, {layers}, {state}, seed {seed}, Hessian in {par}, {steps}: eigenvalue mass (|lambda| > 1e-6 max|lambda|)",
            fontsize=9,
        )
        ax.set_ylabel("fraction of n")
        ax.set_yscale("log")
        ax.set_ylim(bottom=1e-4)
        ax.tick_params(axis="y", which="both", labelsize=7)
        ax.legend(fontsize=7)
    axes[-1, 0].set_xlabel("eigenvalue (log scale on both sides of 0)")
    fig.suptitle("Eigenvalue densities, gates vs LoRA (MiniLM, 8 train examples, mean pooling, float64)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    made.append(figures_dir / "hessian_densities.png")
    fig.savefig(made[-1], dpi=130)
    plt.close(fig)
    made.append(summary_figure(groups, keys, figures_dir))
    made.append(curves_figure(groups, keys, figures_dir))
    full = full_sets_figure(recs, figures_dir)
    if full is not None:
        made.append(full)
    if full is not None and table:
        write_full_table(results_dir)
    return made


def full_sets_figure(recs, figures_dir) -> Path | None:
    """The full adapter sets (the 60-step SLQ sweep): per task and parametrization, the eigenvalue mass and the three
    kappa curves, gates (blue) vs LoRA r=8 on q,v (orange), init (dashed) vs converged (solid), every seed a line."""
    import matplotlib.pyplot as plt

    sel = [
        r for r in recs if r["setting"].get("adapters") in FULL and group_key(r)[5] == "SLQ 60" and mass(r) is not None
    ]
    if not sel:
        return None
    rows = sorted(
        {(r["setting"]["task"], group_key(r)[4]) for r in sel}, key=lambda k: (k[0] != "SST-2", k[0], k[1] != "theta")
    )
    fig, axes = plt.subplots(len(rows), 4, figsize=(17, 3.1 * len(rows)), squeeze=False)
    nan = lambda xs: [np.nan if x is None else x for x in xs]  # noqa: E731
    for row, (task, par) in zip(axes, rows):
        mine = [r for r in sel if r["setting"]["task"] == task and group_key(r)[4] == par]
        top = max(np.abs(mass(r)[0]).max() for r in mine)
        lo = 1e-6 * top
        edges = np.logspace(np.log10(lo), np.log10(top * 1.01), 22)
        seen = set()
        for r in sorted(mine, key=lambda r: (r["setting"]["method"], group_key(r)[2], r["seed"])):
            state = group_key(r)[2]
            lab = f"{label(r)}, {state}"
            style = dict(
                color="tab:blue" if r["setting"]["method"] == "gates" else "tab:orange",
                ls="-" if state == "converged" else "--",
                lw=1.3,
                alpha=0.85,
                label=None if lab in seen else lab,
            )
            seen.add(lab)
            ev, w, _ = mass(r)
            h = [np.histogram(sign * ev, edges, weights=w)[0] for sign in (1, -1)]
            row[0].stairs(
                np.concatenate([h[1][::-1], [w[np.abs(ev) <= lo].sum()], h[0]]),
                np.concatenate([-edges[::-1], edges]),
                **style,
            )
            c = record_conditioning(r)
            row[1].plot(c.curve.tols, nan(c.curve.kappa), marker="o", ms=2.5, **style)
            row[2].plot(c.matched.ks, nan(c.matched.kappa_top), marker="o", ms=2.5, **style)
            row[3].plot(c.matched.fractions[:3], nan(c.matched.kappa_mass[:3]), marker="o", ms=2.5, **style)
        row[0].set_xscale("symlog", linthresh=lo)
        ticks = [10.0**k for k in range(int(np.ceil(np.log10(top))), int(np.floor(np.log10(lo))), -2)][::-1]
        row[0].set_xticks(
            [-t for t in ticks[::-1]] + ticks,
            [f"-1e{np.log10(t):.0f}" for t in ticks[::-1]] + [f"1e{np.log10(t):.0f}" for t in ticks],
            fontsize=6,
        )
        row[0].set_yscale("log")
        row[0].set_ylim(bottom=1e-5)
        row[0].set_title(f"{task}, in {par}: eigenvalue mass / n (middle bin: |lambda| <= 1e-6 max)", fontsize=8)
        row[1].axvspan(1e-8, 1e-3, color="0.9", zorder=0)
        row[1].set_title("kappa_eff(tol) (grey: below SLQ's resolution)", fontsize=8)
        row[2].set_title("lambda_1 / lambda_k, same k", fontsize=8)
        row[3].set_title("lambda_1 / lambda_k(f), same mass fraction", fontsize=8)
        for ax, xl in zip(
            row, ("eigenvalue", "tolerance (relative to lambda_1)", "k", "fraction f of the positive mass")
        ):
            ax.set_xlabel(xl, fontsize=8)
            ax.tick_params(labelsize=7)
        for ax in row[1:3]:
            ax.set_xscale("log")
        for ax in row[1:]:
            ax.set_yscale("log")
        row[0].legend(fontsize=6)
    fig.suptitle(
        "Full adapter sets, MiniLM: gates on all 36 matrices (blue) vs LoRA r=8 on q,v (orange); init dashed, converged "
        "solid, one line per seed; SLQ (60 steps x 3 probes) + Lanczos ends, 8 train examples",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    path = Path(figures_dir) / "hessian_full_sets.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def summary_figure(groups, keys, figures_dir) -> Path:
    """kappa_eff, lambda_max and negative/zero fractions, side by side per setting."""
    import matplotlib.pyplot as plt

    rows = []
    for key in keys:
        for method, r in sorted(groups[key].items()):
            rep = {rp["method"]: rp for rp in r["reports"]}
            ends = rep.get("exact") or rep.get("lanczos") or rep.get("slq")
            counts = rep.get("exact") or rep.get("slq") or {}
            n = r["setting"]["n"]
            ev = (r.get("eigenvalues") or {}).get("exact")
            k3 = summarize(np.asarray(ev), 1e-3)["kappa_eff"] if ev else None
            rows.append(
                dict(
                    label=f"{key[0]} {key[1]} {key[2]} s{key[3]} {key[5]}\n{label(r)}",
                    method=r["setting"]["method"],
                    kappa=(rep.get("exact") or {}).get("kappa_eff"),
                    kappa3=k3,
                    lmax=ends["lambda_max"],
                    neg=(counts.get("n_negative") or 0) / n,
                    zero=(counts.get("n_zero") or 0) / n,
                    est=counts.get("counts_estimated", False),
                )
            )
    fig, axes = plt.subplots(1, 5, figsize=(17, 0.45 * len(rows) + 2), sharey=True)
    y = np.arange(len(rows))
    colors = ["tab:blue" if r["method"] == "gates" else "tab:orange" for r in rows]
    for ax, key, title, log in zip(
        axes,
        ("kappa", "kappa3", "lmax", "neg", "zero"),
        (
            "kappa_eff, tol 1e-6 (exact only)",
            "kappa_eff, tol 1e-3 (exact only)",
            "lambda_max",
            "negative eigenvalues / n",
            "zero eigenvalues / n (|lambda| <= tol max|lambda|)",
        ),
        (True, True, True, False, False),
    ):
        vals = [r[key] if r[key] is not None and r[key] > 0 or key in ("neg", "zero") else np.nan for r in rows]
        ax.barh(y, vals, color=colors)
        for yi, v, r in zip(y, vals, rows):
            txt = (
                "n/a" if np.isnan(v) else (f"{v:.3g}" + (" (SLQ est.)" if r["est"] and key in ("neg", "zero") else ""))
            )
            ax.text(0.02, yi, txt, transform=ax.get_yaxis_transform(), va="center", fontsize=7)
        if log:
            ax.set_xscale("log")
        ax.set_title(title, fontsize=9)
    axes[0].set_yticks(y, [r["label"] for r in rows], fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle(
        "Hessian conditioning, gates (blue) vs LoRA (orange): MiniLM, 8 train examples, mean pooling, float64; "
        "exact counts at tol 1e-6, SLQ estimates at 1e-3; one tolerance: see hessian_kappa_curves.png",
        fontsize=9,
    )
    fig.tight_layout()
    path = Path(figures_dir) / "hessian_conditioning.png"
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def curves_figure(groups, keys, figures_dir) -> Path:
    """Per setting: kappa_eff against the tolerance, kappa over the top k, kappa over a fraction of the positive mass."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(keys), 3, figsize=(13, 2.6 * len(keys)), squeeze=False)
    for row, key in zip(axes, keys):
        for method, r in sorted(groups[key].items()):
            c = record_conditioning(r)
            style = dict(
                marker="o",
                ms=3,
                lw=1.4,
                color="tab:blue" if r["setting"]["method"] == "gates" else "tab:orange",
                ls="--" if r["setting"].get("adapters") == "matched" else "-",
                label=f"{label(r)} [{c.source}]",
            )
            nan = lambda xs: [np.nan if x is None else x for x in xs]  # noqa: E731
            row[0].plot(c.curve.tols, nan(c.curve.kappa), **style)
            row[1].plot(c.matched.ks, nan(c.matched.kappa_top), **style)
            row[2].plot(c.matched.fractions, nan(c.matched.kappa_mass), **style)
        for ax, xl in zip(
            row, ("tolerance (relative to lambda_max)", "k (top eigenvalues)", "fraction f of the positive mass")
        ):
            ax.set_yscale("log")
            ax.set_xscale("log" if "fraction" not in xl else "linear")
            ax.set_xlabel(xl, fontsize=8)
            ax.tick_params(labelsize=7)
        row[0].set_ylabel("kappa", fontsize=8)
        t, layers, state, seed, par, steps = key
        row[0].set_title(f"{t}, {layers}, {state}, s{seed}, in {par} {steps}: kappa_eff(tol)", fontsize=8)
        row[1].set_title("lambda_1 / lambda_k (same k for both)", fontsize=8)
        row[2].set_title("lambda_1 / lambda_k(f) (same mass fraction)", fontsize=8)
        row[0].legend(fontsize=6)
    fig.suptitle(
        "Condition numbers as curves, never one number (docs/design.md §11); SLQ values are estimates", fontsize=10
    )
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    path = Path(figures_dir) / "hessian_kappa_curves.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
