"""Saturated gates and their exact zeros (docs/design.md §4).

A gate clamped at 0 or 1 in every noise draw (or in eval mode) has dz/dtheta = 0, so its row and column
of H are exactly zero: an exact zero eigenvalue per saturated coordinate. Lanczos and SLQ spend their
few products better on the rest, P H P^T (operator.Restricted), with the zeros added back:

    spectrum(H) = spectrum(P H P^T)  +  k zeros        (k = saturated coordinates)

With the sparsity penalty in the loss the k rows are not zero but the penalty's, diagonal for 'target' and
'l0' (`deflated_values`): then the k zeros become those k exact values.

With K noise draws a coordinate is exactly flat only if its gate is clamped in all K: with
p_i = P(clamped in one draw) = Phi(-s_i / sigma) + 1 - Phi((1 - s_i) / sigma), s_i = mu_i + 0.5,
E[flat] = sum_i p_i^K -> 0 as K grows unless p_i = 1: the expected objective (K -> infinity) has exact
zeros only where the eval gate is clamped beyond reach of the noise. `flat_vs_draws` counts both.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from ..gates import Gate
from .operator import HessianOperator, Restricted
from .spectrum import SpectrumReport, exact, lanczos, slq, summarize

DEFLATABLE = {"exact": exact, "lanczos": lanczos, "slq": slq}


def saturated_mask(op: HessianOperator) -> torch.Tensor | None:
    """Per coordinate of op: a gate clamped in every draw (or in eval mode), so its Hessian row is exactly zero.
    None when op has no gate parameter."""
    gates = {id(m.theta): m for m in op.model.modules() if isinstance(m, Gate)}
    if not any(id(p) in gates for p in op.params):
        return None
    masks = []
    for p in op.params:
        g = gates.get(id(p))
        if g is None:
            masks.append(torch.zeros(p.numel(), dtype=torch.bool))
            continue
        s = (g.mu + 0.5).detach().cpu()
        ss = [s + g.sigma * d[g].cpu() for d in op.draws] if op.draws else [s]
        masks.append(~torch.stack([(x > 0) & (x < 1) for x in ss]).any(0))
    return torch.cat(masks)


def saturated_gates(op: HessianOperator) -> int | None:
    """How many coordinates of op are saturated gates (None: op has no gate parameter)."""
    mask = saturated_mask(op)
    return None if mask is None else int(mask.sum())


def deflated_values(op: HessianOperator, mask: torch.Tensor, rtol: float = 1e-9) -> np.ndarray:
    """The exact eigenvalues of H on the masked (saturated) coordinates, ordered as the mask.

    Without a penalty they are zeros (no product). With `op.penalty` a saturated gate still has curvature:
    the penalty's, which sees theta through P(open) = Phi((mu + 0.5) / reg_sigma) and no clamp. The penalties
    'target' and 'l0' (also with the kurtosis weights, which carry no gradient) are sums of one-coordinate
    terms inside each gate vector's |mean - keep|, so away from the kink their Hessian is diagonal and the
    saturated block decouples from the rest: its eigenvalues are its diagonal, h = H 1_mask on the mask. Two
    products check it (h off the mask, and H (r on the mask) against h * r, both to `rtol` relative); a
    coupling penalty ('params': kept rows x kept columns) raises ValueError: do not deflate it then."""
    if op.penalty is None:
        return np.zeros(int(mask.sum()))
    m = mask.to(device=op.device)
    one = m.to(op.dtype)
    h = op.matvec(one)
    r = torch.randn(op.n, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(op.dtype) * one
    hr = op.matvec(r)
    scale = float(h[m].abs().max()) if bool(m.any()) else 0.0
    off = max(float(h[~m].abs().max()) if bool((~m).any()) else 0.0, float((hr - h * r).abs().max()))
    if off > rtol * max(scale, 1e-300) and off > 1e-300:
        raise ValueError(
            f"the penalty couples the saturated coordinates ({off:.3g} off the diagonal vs {scale:.3g} on it): "
            "its block is not diagonal, run without deflation"
        )
    return h[m].detach().cpu().double().numpy()


def value_clusters(values: np.ndarray, per_decade: int = 10) -> dict:
    """Many eigenvalues as {"nodes", "counts"}: exact zeros, then per sign log-spaced bins (`per_decade`), each bin
    as its mean with its count: what a density needs (the counts in a report come from the values themselves)."""
    v = np.asarray(values, dtype=np.float64)
    nodes, counts = [], []
    if (v == 0).any():
        nodes.append(0.0), counts.append(float((v == 0).sum()))
    for sign in (1.0, -1.0):
        x = v[sign * v > 0] * sign
        if x.size:
            b = np.floor(np.log10(x) * per_decade)
            for key in np.unique(b):
                sel = x[b == key]
                nodes.append(float(sign * sel.mean())), counts.append(float(sel.size))
    return {"nodes": nodes, "counts": counts}


def deflated(method: str, op: HessianOperator, mask: torch.Tensor, inner=None, fill=None, **kw) -> SpectrumReport:
    """`method` ('lanczos', 'slq' or 'exact') on the coordinates where mask is False (`inner`: the operator
    on them, default P H P^T; e.g. precondition.Scaled); the k masked ones are added back as exact zeros
    (n, n_zero, and the ends, since 0 is an eigenvalue too), or as `fill`, the masked block's exact eigenvalues
    (`deflated_values`: the penalty's curvature on saturated gates), counted exactly (at the report's tol, or
    SLQ's count_tol, relative to the largest |eigenvalue|) and kept as clusters in extra["deflated_block"]."""
    if method not in DEFLATABLE:
        raise ValueError(f"deflated runs one of {sorted(DEFLATABLE)}, got {method!r}")
    rep = DEFLATABLE[method](inner if inner is not None else Restricted(op, ~mask), **kw)
    k = int(mask.sum())
    fill = np.zeros(0) if fill is None else np.asarray(fill, dtype=np.float64)
    if fill.size not in (0, k):
        raise ValueError(f"fill has {fill.size} values for {k} deflated coordinates")
    if not fill.size or not fill.any():
        return replace(
            rep,
            n=op.n,
            n_zero=rep.n_zero + k if rep.n_zero is not None else None,
            lambda_max=max(rep.lambda_max, 0.0),
            lambda_min=min(rep.lambda_min, 0.0),
            active=f"{k} saturated gate coordinates (exact zero rows) deflated; then {rep.active}",
            extra={**rep.extra, "deflated_saturated": k},
        )
    lmax, lmin = max(rep.lambda_max, float(fill.max())), min(rep.lambda_min, float(fill.min()))
    scale = max(abs(lmax), abs(lmin))
    ctol = rep.extra.get("count_tol", rep.tol)
    zero, neg = int((np.abs(fill) <= ctol * scale).sum()), int((fill < -ctol * scale).sum())
    act = int((fill > rep.tol * lmax).sum()) if lmax > 0 else 0
    add = lambda a, b: None if a is None else a + b  # noqa: E731
    kappa = rep.kappa_eff
    if rep.eigenvalues is not None:
        ev = np.concatenate([rep.eigenvalues, fill])
        kappa = summarize(ev, rep.tol)["kappa_eff"]
    return replace(
        rep,
        n=op.n,
        n_zero=add(rep.n_zero, zero),
        n_negative=add(rep.n_negative, neg),
        n_active=add(rep.n_active, act),
        kappa_eff=kappa,
        lambda_max=lmax,
        lambda_min=lmin,
        trace=add(rep.trace, float(fill.sum())),
        eigenvalues=None if rep.eigenvalues is None else np.concatenate([rep.eigenvalues, fill]),
        active=f"{k} saturated gate coordinates deflated (their block: the penalty's diagonal, exact); then {rep.active}",
        extra={
            **rep.extra,
            "deflated_saturated": k,
            "deflated_block": value_clusters(fill),
            "deflated_block_counts": {
                "negative": neg,
                "zero": zero,
                "active": act,
                "min": float(fill.min()),
                "max": float(fill.max()),
            },
        },
    )


@dataclass(frozen=True)
class FlatCounts:
    """Exactly flat gate coordinates (clamped in every one of K draws) against K: counted on the draws
    a HessianOperator with that seed uses (its first K), and expected, sum_i p_i^K."""

    n_gates: int
    draws: tuple[int, ...]
    counted: tuple[int, ...]
    expected: tuple[float, ...]
    eval_clamped: int  # K = 0: eval gates, clamped at 0 or 1


def flat_vs_draws(model: torch.nn.Module, draws=(1, 2, 8, 64, 256), seed: int = 0) -> FlatCounts:
    """FlatCounts of every Gate of `model`, noise drawn as HessianOperator(..., seed=seed) draws it."""
    gates = [m for m in model.modules() if isinstance(m, Gate)]
    if not gates:
        raise ValueError("the model has no gates")
    g = torch.Generator().manual_seed(seed)
    s = torch.cat([(m.mu + 0.5).detach().double().cpu() for m in gates])
    sigma = torch.cat([torch.full((m.n,), m.sigma, dtype=torch.float64) for m in gates])
    clamped_all = torch.ones_like(s, dtype=torch.bool)
    counted, k = [], 0
    for K in sorted(draws):
        while k < K:
            eps = torch.cat([torch.randn(m.n, generator=g) for m in gates]).double()
            x = s + sigma * eps
            clamped_all &= (x <= 0) | (x >= 1)
            k += 1
        counted.append(int(clamped_all.sum()))
    p = torch.special.ndtr(-s / sigma) + 1 - torch.special.ndtr((1 - s) / sigma)
    return FlatCounts(
        int(s.numel()),
        tuple(sorted(draws)),
        tuple(counted),
        tuple(float((p**K).sum()) for K in sorted(draws)),
        int(((s <= 0) | (s >= 1)).sum()),
    )
