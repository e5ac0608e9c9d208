"""Sparsity objectives over the gated layers (DESIGN.md section 1).

With P = Phi((mu + 0.5) / reg_sigma) per gate and keep = 1 - target:
    target: mean over gate vectors of |mean(P) - keep|          (the authors')
    l0:     mean over gate vectors of mean(P)                   (STG expected L0)
    params: |sum_l (sum P_r)(sum P_c) / sum_l out*in - keep|    (expected kept weights)
"""
from __future__ import annotations

import torch
from torch import nn

from .accounting import gated_layers

KINDS = ("target", "l0", "params")


def _check_target(target) -> float:
    if target is None or not isinstance(target, (int, float)) or not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity must be a number in [0, 1), got {target!r}")
    return float(target)


def expected_kept_fraction(model: nn.Module, reg_sigma: float | None = None) -> torch.Tensor:
    """Expected fraction of gated weight entries kept: sum (sum P_r)(sum P_c) / sum out*in."""
    kept, total = 0.0, 0
    for m in _layers(model).values():
        p_r = m.row_gate.prob_open(reg_sigma).sum() if m.row_gate is not None else m.out_features
        p_c = m.col_gate.prob_open(reg_sigma).sum() if m.col_gate is not None else m.in_features
        kept = kept + p_r * p_c
        total += m.out_features * m.in_features
    return kept / total


def _layers(model):
    layers = gated_layers(model)
    if not layers:
        raise ValueError("the model has no gated layers; call gatecore.add_gates first")
    return layers


def sparsity_penalty(model: nn.Module, kind: str = "target", target: float | None = None,
                     reg_sigma: float | None = None) -> torch.Tensor:
    """Differentiable scalar penalty; `target` is the requested sparsity (1 - keep).

    `reg_sigma` overrides every gate's own value (e.g. for annealing).
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if kind == "params":
        return (expected_kept_fraction(model, reg_sigma) - (1.0 - _check_target(target))).abs()
    gates = [g for m in _layers(model).values() for g in m.gates()]
    means = torch.stack([g.prob_open(reg_sigma).mean() for g in gates])
    if kind == "l0":
        return means.mean()
    return (means - (1.0 - _check_target(target))).abs().mean()
