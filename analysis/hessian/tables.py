"""Tables of the Hessian study, from results/hessian/*.json alone: every record's numbers, and the full adapter sets'
gates-vs-LoRA verdict of docs/design.md §11 item 1 (results/hessian/full_sets.md, written by `make figures`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from analysis.constants import study_results

from .records import group_key, load, mass, record_conditioning


def records_table(recs: list[dict]) -> str:
    """One line per (run, spectrum method): the numbers of docs/design.md §4."""
    lines = [
        f"{'run':<34} {'method':<9} {'n':>6} {'Hv':>5} {'lambda_max':>11} {'lambda_min':>11} {'neg':>7} {'zero':>7} "
        f"{'kappa_eff':>10} {'saturated':>9}"
    ]
    fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
    for rec in recs:
        s = rec["setting"]
        name = rec.get("name") or f"{s['task']}_{s['method']}_{s['state'].split()[0]}"
        for r in rec["reports"]:
            lines.append(
                f"{name:<34} {r['method']:<9} {r['n']:>6} {r['products']:>5} {fmt(r['lambda_max'], '11.3e')} "
                f"{fmt(r['lambda_min'], '11.3e')} {fmt(r['n_negative'], '7.0f')} {fmt(r['n_zero'], '7.0f')} "
                f"{fmt(r['kappa_eff'], '10.3g')} {fmt(s.get('n_saturated_gates'), '9d')}"
            )
    return "\n".join(lines)


def summary_table(results_dir) -> str:
    return records_table(load(results_dir))


# ---- the full adapter sets: gates-all vs lora-qv, init vs converged, theta vs dW (docs/design.md §11) ----------------
FULL = ("gates-all", "lora-qv")
# kappa_eff(tol) is compared from tol 1e-3 up only: from an SLQ density, values below the node standing for the zero
# cluster (~1e-3 relative, SLQ_COUNT_TOL) mean nothing (§11); [1e-6, 1e-3) needs exact spectra, not available at n > 2e4
VERDICT_TOLS = (1e-3, 1e-2, 1e-1)
VERDICT_KS = (2, 4, 8, 16, 32, 64, 128, 256)
VERDICT_FRACTIONS = (0.5, 0.9, 0.99)


def full_pairs(recs: list[dict]) -> dict[tuple, dict[str, dict]]:
    """(task, state, seed, 'theta'|'dW', SLQ steps) -> {preset: record} for the preset runs (gates-all, lora-qv,
    matched)."""
    out = {}
    for r in recs:
        if r["setting"].get("adapters"):
            task, _, state, seed, par, steps = group_key(r)
            out.setdefault((task, state, seed, par, steps), {})[r["setting"]["adapters"]] = r
    return out


def negative_mass(rec: dict) -> float | None:
    """sum |lambda < 0| / sum |lambda| over the spectrum (SLQ density with its deflated block, or exact)."""
    m = mass(rec)
    if m is None:
        return None
    v, w, _ = m
    tot = float((np.abs(v) * w).sum())
    return float((np.abs(v[v < 0]) * w[v < 0]).sum() / tot) if tot > 0 else None


def curve_points(rec: dict) -> dict[str, float]:
    """The compared points of one record: kappa_eff at VERDICT_TOLS, lambda_1/lambda_k at VERDICT_KS,
    lambda_1/lambda_k(f) at VERDICT_FRACTIONS; inf where the set reaches a zero or negative eigenvalue (no finite
    kappa over it)."""
    c = record_conditioning(rec)
    inf = lambda x: float("inf") if x is None else x  # noqa: E731
    pts = {f"tol {t:g}": inf(k) for t, k in zip(c.curve.tols, c.curve.kappa) if any(np.isclose(t, VERDICT_TOLS))}
    pts.update({f"k {k}": inf(x) for k, x in zip(c.matched.ks, c.matched.kappa_top) if k in VERDICT_KS})
    pts.update(
        {f"f {f:g}": inf(x) for f, x in zip(c.matched.fractions, c.matched.kappa_mass) if f in VERDICT_FRACTIONS}
    )
    return pts


def dominance(a: dict, b: dict) -> tuple[int, int, int]:
    """(points where a < b, where a > b, where equal) over the common points of curve_points where both are finite:
    a top-k set past either side's positive eigenvalues is beyond the smaller active set (§11), not compared."""
    lo = hi = tie = 0
    for key in a.keys() & b.keys():
        x, y = a[key], b[key]
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        if x < y:
            lo += 1
        elif x > y:
            hi += 1
        else:
            tie += 1
    return lo, hi, tie


def probe_points(rec: dict) -> list[dict[str, float]]:
    """curve_points of each SLQ probe's density alone: their spread is the estimate's own scatter."""
    d = (rec.get("densities") or {}).get("slq")
    if not d:
        return [curve_points(rec)]
    return [
        curve_points({**rec, "densities": {"slq": {"nodes": [n], "weights": [w]}}})
        for n, w in zip(d["nodes"], d["weights"])
    ]


def verdict(gates: dict, lora: dict) -> str:
    """Item 1 over the compared points: where the gates' estimate is lower, and at how many of those the probes agree
    (every gates probe below every LoRA probe; likewise for higher)."""
    a, b = curve_points(gates), curve_points(lora)
    lo, hi, tie = dominance(a, b)
    n = lo + hi + tie
    pa, pb = probe_points(gates), probe_points(lora)
    keys = [k for k in a.keys() & b.keys() if np.isfinite(a[k]) and np.isfinite(b[k])]
    span = lambda ps, k: [p[k] for p in ps if np.isfinite(p.get(k, np.inf))] or [np.inf]  # noqa: E731
    sure_lo = sum(max(span(pa, k)) < min(span(pb, k)) for k in keys if a[k] < b[k])
    sure_hi = sum(min(span(pa, k)) > max(span(pb, k)) for k in keys if a[k] > b[k])
    if lo == n:
        return f"gates lower at all {n} ({sure_lo} beyond the probe spread)"
    if hi == n:
        return f"LoRA lower at all {n} ({sure_hi} beyond the probe spread)"
    return f"cross: gates lower at {lo}/{n} ({sure_lo} beyond the probe spread), higher at {hi} ({sure_hi})"


def full_table(results_dir, markdown: bool = False) -> str:
    """gates-all vs lora-qv per task / state / seed / parametrization: extremes, negative mass, kappa at tolerances,
    matched top-k and mass-fraction kappas, and which curve lies lower (docs/design.md §11, item 1)."""
    pairs = full_pairs(load(results_dir))
    cols = [
        "task",
        "state",
        "seed",
        "in",
        "SLQ",
        "method",
        "n",
        "analysed",
        "lambda_max",
        "lambda_min",
        "neg. mass",
        *[f"kappa tol {t:g}" for t in VERDICT_TOLS],
        "kappa k=8",
        "kappa k=64",
        "kappa k=256",
        *[f"kappa f={f:g}" for f in VERDICT_FRACTIONS],
        "item 1 (gates vs LoRA)",
    ]
    fmt = lambda v: "-" if v is None else ("inf" if v == float("inf") else f"{v:.3g}")  # noqa: E731
    rows = []
    state_order = {"init": 0, "converged": 1}
    for key in sorted(pairs, key=lambda k: (k[0], k[2], state_order.get(k[1], 2), k[3], k[4])):
        task, state, seed, par, steps = key
        group = pairs[key]
        v = verdict(group["gates-all"], group["lora-qv"]) if all(p in group for p in FULL) else "-"
        for preset in (*FULL, "matched"):
            r = group.get(preset)
            if r is None:
                continue
            s = r["setting"]
            ends = next(x for x in r["reports"] if x["method"] in ("lanczos", "exact", "slq"))
            pts = curve_points(r)
            label = (
                "gates" + (f" K={s['noise_draws']}" + (" +pen" if s.get("penalty") else ""))
                if s["method"] == "gates"
                else f"LoRA r={s['lora_r']}" + (" (matched)" if preset == "matched" else "")
            )
            rows.append(
                [
                    task,
                    state,
                    str(seed),
                    par,
                    steps.replace("SLQ ", ""),
                    label,
                    str(s["n"]),
                    str(s["n"] - s["deflated"]),
                    fmt(ends["lambda_max"]),
                    fmt(ends["lambda_min"]),
                    fmt(negative_mass(r)),
                    *[fmt(pts[f"tol {t:g}"]) for t in VERDICT_TOLS],
                    fmt(pts["k 8"]),
                    fmt(pts["k 64"]),
                    fmt(pts["k 256"]),
                    *[fmt(pts[f"f {f:g}"]) for f in VERDICT_FRACTIONS],
                    v if preset == "gates-all" else "",
                ]
            )
    if markdown:
        return "\n".join(
            ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] + ["| " + " | ".join(r) + " |" for r in rows]
        )
    width = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    return "\n".join("  ".join(x.ljust(w) for x, w in zip(r, width)) for r in [cols, *rows])


FULL_TABLE_HEAD = """# Full adapter sets: gates-all vs lora-qv (issue 13)

Generated by `make figures` (`python -m analysis.figures --only hessian`) from `results/hessian/*.json` alone (do not edit).
SLQ estimates (Lanczos ends); kappa = lambda_1 / lambda: at a tolerance (kappa_eff(tol), from 1e-3 up: below it an
SLQ density cannot resolve), over the top k, over the top set carrying a fraction f of the positive mass; inf: the
set reaches a zero or negative eigenvalue. neg. mass: sum |lambda < 0| / sum |lambda|. analysed: coordinates the
spectra ran on (saturated gates, or coordinates that move no weight in dW, deflated). Last column: over those 14
points (fewer where a top-k set runs past one side's positive eigenvalues), where the gates' curve lies below
LoRA's (docs/design.md §11, item 1). "beyond the probe spread": every one of the gates' SLQ probes alone gives a lower (higher)
value than every one of LoRA's: SLQ values move by up to several times between probes and between runs.

"""  # noqa: E501 (the markdown it writes keeps its line breaks)


def write_full_table(results_dir) -> Path:
    """results/hessian/full_sets.md: FULL_TABLE_HEAD and full_table (what `make figures` writes)."""
    path = study_results("hessian", results_dir) / "full_sets.md"
    path.write_text(FULL_TABLE_HEAD + full_table(results_dir, markdown=True) + "\n")
    return path
