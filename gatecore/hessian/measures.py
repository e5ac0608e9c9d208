"""Conditioning measures that do not hinge on one tolerance (docs/design.md §4 and §11).

A spectrum is a list of eigenvalues with counts: exact (every count 1) or an SLQ density (Gauss nodes,
count = n * averaged weight; saturated coordinates added back as a node at 0). From it:

    matched top-k:    kappa_k = lambda_1 / lambda_k                       the same k for both methods
    matched mass:     kappa_f = lambda_1 / lambda_{k_f},  k_f = min{k : sum_{i<=k} lambda_i >= f * sum_{lambda>0} lambda}
    tolerance curve:  kappa_eff(tol) = lambda_1 / min{lambda : lambda > tol * lambda_1},  tol = 1e-8 .. 1e-1
                      with n_active(tol), n_zero(tol) (|lambda| <= tol max|lambda|), n_negative(tol)

kappa_k is None where lambda_k <= FLOOR * lambda_1 (the top-k set reaches a zero, a roundoff-level or a
negative eigenvalue: no finite condition number over it; float64 products carry ~1e-13 relative error). From a density every number is an estimate (`estimated`): a Gauss node stands
for a cluster of eigenvalues, so lambda_k is the node at which the cumulative count reaches k.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

TOLS = tuple(10.0**-k for k in range(8, 0, -1))  # 1e-8 .. 1e-1
TOP_KS = (2, 4, 8, 16, 32, 64, 128, 256, 1024)
FRACTIONS = (0.5, 0.9, 0.99, 0.999)
FLOOR = 1e-12  # below this * lambda_1: roundoff, not curvature


@dataclass(frozen=True)
class ToleranceCurve:
    """kappa_eff and the counts as functions of the relative tolerance."""

    tols: tuple[float, ...]
    kappa: tuple[float | None, ...]
    n_active: tuple[float, ...]
    n_zero: tuple[float, ...]
    n_negative: tuple[float, ...]


@dataclass(frozen=True)
class MatchedKappa:
    """Condition numbers over matched active sets: the top k eigenvalues, and the top set carrying a
    fraction f of the positive spectral mass (k_mass: its size)."""

    ks: tuple[int, ...]
    kappa_top: tuple[float | None, ...]
    fractions: tuple[float, ...]
    kappa_mass: tuple[float | None, ...]
    k_mass: tuple[float | None, ...]


@dataclass(frozen=True)
class Conditioning:
    """Every measure of one spectrum; `source` is 'exact' or 'SLQ' (then `estimated`)."""

    n: float
    lambda_max: float
    lambda_min: float
    source: str
    estimated: bool
    matched: MatchedKappa
    curve: ToleranceCurve

    def as_dict(self) -> dict:
        return asdict(self)


def _sorted(values, counts=None) -> tuple[np.ndarray, np.ndarray]:
    v = np.asarray(values, dtype=np.float64).ravel()
    c = np.ones_like(v) if counts is None else np.asarray(counts, dtype=np.float64).ravel()
    if v.shape != c.shape or v.size == 0:
        raise ValueError(f"need as many counts as eigenvalues (and at least one), got {v.size} and {c.size}")
    order = np.argsort(-v, kind="stable")
    return v[order], c[order]


def top_k_kappa(values, counts=None, ks=TOP_KS, lambda_max: float | None = None) -> tuple[float | None, ...]:
    """lambda_1 / lambda_k for each k (None: k beyond n, or lambda_k <= FLOOR * lambda_1)."""
    v, c = _sorted(values, counts)
    top = v[0] if lambda_max is None else lambda_max
    cum = np.cumsum(c)
    out = []
    for k in ks:
        i = int(np.searchsorted(cum, k - 1e-9))
        out.append(None if i >= v.size or v[i] <= FLOOR * top or top <= 0 else float(top / v[i]))
    return tuple(out)


def mass_kappa(values, counts=None, fractions=FRACTIONS, lambda_max: float | None = None):
    """(kappa_f, k_f) for each f: the smallest top set with sum lambda >= f * (sum of positive lambda)."""
    v, c = _sorted(values, counts)
    pos = v > 0
    total = float((v[pos] * c[pos]).sum())
    top = v[0] if lambda_max is None else lambda_max
    if total <= 0 or top <= 0:
        return tuple(None for _ in fractions), tuple(None for _ in fractions)
    cum_mass, cum_count = np.cumsum(np.where(pos, v * c, 0.0)), np.cumsum(c)
    kap, ks = [], []
    for f in fractions:
        i = min(int(np.searchsorted(cum_mass, f * total * (1 - 1e-12))), int(pos.sum()) - 1)
        kap.append(float(top / v[i]))
        ks.append(float(cum_count[i]))
    return tuple(kap), tuple(ks)


def tolerance_curve(values, counts=None, tols=TOLS, lambda_max: float | None = None) -> ToleranceCurve:
    """kappa_eff(tol) = lambda_1 / min{lambda > tol lambda_1}, and the counts at each tol."""
    v, c = _sorted(values, counts)
    top = v[0] if lambda_max is None else lambda_max
    scale = max(abs(top), float(np.abs(v).max()))
    kap, act, zero, neg = [], [], [], []
    for t in tols:
        a = v > t * top if top > 0 else np.zeros_like(v, bool)
        kap.append(float(top / v[a].min()) if a.any() else None)
        act.append(float(c[a].sum()))
        zero.append(float(c[np.abs(v) <= t * scale].sum()))
        neg.append(float(c[v < -t * scale].sum()))
    return ToleranceCurve(tuple(tols), tuple(kap), tuple(act), tuple(zero), tuple(neg))


def conditioning(
    values,
    counts=None,
    source: str = "exact",
    lambda_max: float | None = None,
    lambda_min: float | None = None,
    ks=TOP_KS,
    fractions=FRACTIONS,
    tols=TOLS,
) -> Conditioning:
    """All measures of one spectrum. `lambda_max`/`lambda_min` (e.g. Lanczos ends) replace the extreme
    nodes of a density, which Gauss quadrature places inside the spectrum."""
    v, c = _sorted(values, counts)
    lmax = float(v[0] if lambda_max is None else lambda_max)
    kap, k_f = mass_kappa(v, c, fractions, lmax)
    return Conditioning(
        float(c.sum()),
        lmax,
        float(v[-1] if lambda_min is None else lambda_min),
        source,
        source != "exact",
        MatchedKappa(tuple(ks), top_k_kappa(v, c, ks, lmax), tuple(fractions), kap, k_f),
        tolerance_curve(v, c, tols, lmax),
    )


def density_counts(
    density: dict, n: int, deflated: int = 0, block: dict | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(nodes, counts summing to n) of an SLQ density {"nodes": [probe][m], "weights": [probe][m]} that ran on
    n - deflated coordinates; the deflated ones come back as a node at 0 (exact zero rows), or as `block`
    {"nodes", "counts"} (their exact eigenvalues, clustered: deflate.value_clusters)."""
    nodes = np.concatenate([np.asarray(x, dtype=np.float64) for x in density["nodes"]])
    w = np.concatenate([np.asarray(x, dtype=np.float64) for x in density["weights"]]) / len(density["weights"])
    if block:
        return (
            np.concatenate([nodes, np.asarray(block["nodes"], dtype=np.float64)]),
            np.concatenate([w * (n - deflated), np.asarray(block["counts"], dtype=np.float64)]),
        )
    return np.append(nodes, 0.0), np.append(w * (n - deflated), float(deflated))


def report_conditioning(rep, ends=None) -> Conditioning | None:
    """Conditioning of a SpectrumReport (exact eigenvalues, or an SLQ density with `ends`, a report whose
    lambda_max / lambda_min are exact ends, e.g. Lanczos); None for a report with neither."""
    if rep.eigenvalues is not None:
        return conditioning(rep.eigenvalues, source="exact")
    if rep.density is None:
        return None
    v, c = density_counts(
        rep.density, rep.n, int(rep.extra.get("deflated_saturated", 0)), rep.extra.get("deflated_block")
    )
    lmax = ends.lambda_max if ends is not None and ends.lambda_max is not None else None
    lmin = ends.lambda_min if ends is not None and ends.lambda_min is not None else None
    return conditioning(v, c, "SLQ", lambda_max=lmax, lambda_min=lmin)
