"""Saturated gates and their exact zeros (docs/design.md §4).

A gate clamped at 0 or 1 in every noise draw (or in eval mode) has dz/dtheta = 0, so its row and column
of H are exactly zero: an exact zero eigenvalue per saturated coordinate. Lanczos and SLQ spend their
few products better on the rest, P H P^T (operator.Restricted), with the zeros added back:

    spectrum(H) = spectrum(P H P^T)  +  k zeros        (k = saturated coordinates)
"""
from __future__ import annotations

from dataclasses import replace

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


def deflated(method: str, op: HessianOperator, mask: torch.Tensor, **kw) -> SpectrumReport:
    """`method` ('lanczos', 'slq' or 'exact') on the coordinates where mask is False; the k masked ones are
    added back as exact zeros (n, n_zero, and the ends, since 0 is an eigenvalue too)."""
    if method not in DEFLATABLE:
        raise ValueError(f"deflated runs one of {sorted(DEFLATABLE)}, got {method!r}")
    rep = DEFLATABLE[method](Restricted(op, ~mask), **kw)
    k = int(mask.sum())
    return replace(rep, n=op.n, n_zero=rep.n_zero + k if rep.n_zero is not None else None,
                   lambda_max=max(rep.lambda_max, 0.0), lambda_min=min(rep.lambda_min, 0.0),
                   active=f"{k} saturated gate coordinates (exact zero rows) deflated; then {rep.active}",
                   extra={**rep.extra, "deflated_saturated": k})
