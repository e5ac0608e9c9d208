"""Saturated gates and their exact zeros (docs/design.md §4).

A gate clamped at 0 or 1 in every noise draw (or in eval mode) has dz/dtheta = 0, so its row and column
of H are exactly zero: an exact zero eigenvalue per saturated coordinate. Lanczos and SLQ spend their
few products better on the rest, P H P^T (operator.Restricted), with the zeros added back:

    spectrum(H) = spectrum(P H P^T)  +  k zeros        (k = saturated coordinates)

With K noise draws a coordinate is exactly flat only if its gate is clamped in all K: with
p_i = P(clamped in one draw) = Phi(-s_i / sigma) + 1 - Phi((1 - s_i) / sigma), s_i = mu_i + 0.5,
E[flat] = sum_i p_i^K -> 0 as K grows unless p_i = 1: the expected objective (K -> infinity) has exact
zeros only where the eval gate is clamped beyond reach of the noise. `flat_vs_draws` counts both.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..gates import Gate
from .operator import HessianOperator, Restricted
from .spectrum import SpectrumReport, exact, lanczos, slq

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


def deflated(method: str, op: HessianOperator, mask: torch.Tensor, inner=None, **kw) -> SpectrumReport:
    """`method` ('lanczos', 'slq' or 'exact') on the coordinates where mask is False (`inner`: the operator
    on them, default P H P^T; e.g. precondition.Scaled); the k masked ones are added back as exact zeros
    (n, n_zero, and the ends, since 0 is an eigenvalue too)."""
    if method not in DEFLATABLE:
        raise ValueError(f"deflated runs one of {sorted(DEFLATABLE)}, got {method!r}")
    rep = DEFLATABLE[method](inner if inner is not None else Restricted(op, ~mask), **kw)
    k = int(mask.sum())
    return replace(rep, n=op.n, n_zero=rep.n_zero + k if rep.n_zero is not None else None,
                   lambda_max=max(rep.lambda_max, 0.0), lambda_min=min(rep.lambda_min, 0.0),
                   active=f"{k} saturated gate coordinates (exact zero rows) deflated; then {rep.active}",
                   extra={**rep.extra, "deflated_saturated": k})


@dataclass(frozen=True)
class FlatCounts:
    """Exactly flat gate coordinates (clamped in every one of K draws) against K: counted on the draws
    a HessianOperator with that seed uses (its first K), and expected, sum_i p_i^K."""
    n_gates: int
    draws: tuple[int, ...]
    counted: tuple[int, ...]
    expected: tuple[float, ...]
    eval_clamped: int          # K = 0: eval gates, clamped at 0 or 1


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
    return FlatCounts(int(s.numel()), tuple(sorted(draws)), tuple(counted),
                      tuple(float((p ** K).sum()) for K in sorted(draws)), int(((s <= 0) | (s >= 1)).sum()))
