"""Reading the Hessian study's records (results/hessian/*.json): the spectrum as mass, labels, grouping keys.

Shared by the tables (tables.py), the figures (plots.py) and the sweep (compare.py); docs/design.md §4, §11.
"""

from __future__ import annotations

import json

import numpy as np

from analysis.constants import study_results
from analysis.provenance import warn_if_dirty
from gatecore.hessian import conditioning, density_counts


def load(results_dir) -> list[dict]:
    """Every spectrum record under <results_dir>/hessian/ (warning about dirty ones), named by its file."""
    out = []
    for p in sorted(study_results("hessian", results_dir).glob("*.json")):
        rec = json.loads(p.read_text())
        if "reports" in rec:
            warn_if_dirty(p, rec)
            rec["name"] = p.stem
            out.append(rec)
    return out


def mass(rec: dict) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(eigenvalues, weights summing to 1, source) from exact eigenvalues, else the SLQ nodes."""
    ev = (rec.get("eigenvalues") or {}).get("exact")
    if ev:
        ev = np.asarray(ev)
        return ev, np.full(ev.size, 1.0 / ev.size), "exact"
    d = (rec.get("densities") or {}).get("slq")
    if d:
        rep = next(r for r in rec["reports"] if r["method"] == "slq")
        # SLQ ran on the n - k active (or weight-moving) coordinates; the k come back at 0 or as their exact block
        v, c = density_counts(
            d, rep["n"], rep["extra"].get("deflated_saturated", 0), rep["extra"].get("deflated_block")
        )
        return v, c / rep["n"], "SLQ"
    return None


def label(rec: dict) -> str:
    s = rec["setting"]
    adapter = f"gates, K={s['noise_draws']}" if s["method"] == "gates" else f"LoRA r={s['lora_r']}"
    return (
        f"{adapter} (n={s['n']})"
        + (" + penalty" if s.get("penalty") else "")
        + (", per unit dW" if s.get("precondition") else "")
    )


def scope(rec: dict) -> str:
    """Which matrices: 'full sets' (the --adapters presets) or the layer-5 subsets of the earlier runs."""
    s = rec["setting"]
    if s.get("adapters"):
        return "full sets"
    return "layer-5 q,v" if "query" in s["targets"][0] else "layer-5 v"


def group_key(rec: dict) -> tuple:
    """task, matrices, state, seed, parametrization, SLQ steps (runs with 30 and 60 SLQ steps are not mixed)."""
    s = rec["setting"]
    slq = next((r["extra"].get("steps") for r in rec["reports"] if r["method"] == "slq"), None)
    return (
        s["task"],
        scope(rec),
        s["state"].split(" ")[0],
        rec["seed"],
        "dW" if s.get("precondition") else "theta",
        f"SLQ {slq}" if slq else "",
    )


def method_key(rec: dict) -> str:
    s = rec["setting"]
    return s.get("adapters") or s["method"]


def record_conditioning(rec: dict):
    """gatecore.hessian.conditioning of a record's spectrum (exact, or SLQ with the Lanczos ends)."""
    ev, w, src = mass(rec)
    rep = {r["method"]: r for r in rec["reports"]}
    ends = rep.get("exact") or rep.get("lanczos") or {}
    return conditioning(
        ev, w * rec["setting"]["n"], src, lambda_max=ends.get("lambda_max"), lambda_min=ends.get("lambda_min")
    )
