"""Sparsity objectives over the gated layers (docs/design.md §1).

With P = Phi((mu + 0.5) / reg_sigma) per gate and keep = 1 - target:
    target: mean over gate vectors of |mean(P) - keep|          (the authors')
    l0:     mean over gate vectors of mean(P)                   (STG expected L0)
    params: |sum_l (sum P_r)(sum P_c) / sum_l out*in - keep|    (expected kept weights)

`kurtosis_tau` (target only) replaces each mean(P) by a kurtosis-weighted sum over the open gates,
sum_open(w * P), w = softmax(-kappa / tau) from gatecore.kurtosis (the paper's kurtosis-informed
sparsity); it needs the input means that `gatecore.track_input_means(model)` records.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .accounting import gated_layers
from .checks import check_positive
from .kurtosis import DEFAULT_TAU, channel_weights, check_tau

KINDS = ("target", "l0", "params")


def _check_target(target) -> float:
    if target is None or isinstance(target, bool) or not isinstance(target, (int, float)) or not 0.0 <= target < 1.0:
        raise ValueError(f"target sparsity must be a number in [0, 1), got {target!r}")
    return float(target)


def _check_reg_sigma(reg_sigma) -> float | None:
    """None (each gate's own reg_sigma) or a positive finite number: <= 0 would invert or break Phi."""
    return None if reg_sigma is None else check_positive("reg_sigma", reg_sigma)


def expected_kept_fraction(model: nn.Module, reg_sigma: float | None = None) -> torch.Tensor:
    """Expected fraction of gated weight entries kept: sum (sum P_r)(sum P_c) / sum out*in."""
    reg_sigma = _check_reg_sigma(reg_sigma)
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


def kurtosis_weights(
    model: nn.Module, tau: float = DEFAULT_TAU
) -> dict[str, tuple[torch.Tensor | None, torch.Tensor | None]]:
    """Per gated layer name, (w_r, w_c) = softmax(-kappa / tau) over the open rows / columns.

    Computed without gradient from the frozen weight, the recorded input mean x_bar and the
    current eval gates (open = eval gate > 0); full-length vectors, 0 at closed positions, None
    for an ungated side. Needs `gatecore.track_input_means(model)` and one forward pass.
    """
    tau = check_tau(tau)
    layers = _layers(model)
    missing = [name for name, m in layers.items() if m.input_mean is None]
    if missing:
        raise RuntimeError(
            f"no recorded input mean for {len(missing)} gated layer(s) (e.g. {missing[0]!r}); "
            "call gatecore.track_input_means(model) and run a forward pass before the "
            "kurtosis-weighted penalty"
        )
    out = {}
    with torch.no_grad():
        for name, m in layers.items():
            z_r, z_c = m.eval_gates()
            w_r, w_c = channel_weights(m.weight, m.input_mean, z_r > 0, z_c > 0, tau)
            out[name] = (w_r if m.row_gate is not None else None, w_c if m.col_gate is not None else None)
    return out


def _kurtosis_target(model: nn.Module, keep: float, tau: float, reg_sigma: float | None) -> torch.Tensor:
    """mean over gate vectors of |sum_open(w * P) - keep|; w is 0 at closed gates, so they drop out."""
    layers = _layers(model)
    terms = []
    for name, (w_r, w_c) in kurtosis_weights(model, tau).items():
        m = layers[name]
        for gate, w in ((m.row_gate, w_r), (m.col_gate, w_c)):
            if gate is not None:
                p = gate.prob_open(reg_sigma)
                terms.append(((w.to(p.dtype) * p).sum() - keep).abs())
    return torch.stack(terms).mean()


def sparsity_penalty(
    model: nn.Module,
    kind: str = "target",
    target: float | None = None,
    reg_sigma: float | None = None,
    kurtosis_tau: float | None = None,
) -> torch.Tensor:
    """Differentiable scalar penalty; `target` is the requested sparsity (1 - keep).

    `reg_sigma` overrides every gate's own value (e.g. for annealing); it must be positive and finite.
    `target` must be in [0, 1) for "target" and "params"; "l0" has none (one given is checked, then
    ignored with a warning).

    `kurtosis_tau` (None: off; else a positive finite number, the paper uses 100) applies the
    paper's kurtosis-informed weighting, for kind="target" only: each gate vector's term becomes
        |sum_{open} w * P - keep|,   w = softmax(-kappa / tau) over the open gates (eval gate > 0),
    averaged over gate vectors as before. The weights carry no gradient. Closed gates (eval gate 0)
    are out of the sum, as in the authors' code: the penalty no longer pushes them (only the task
    loss, through the noisy forward, moves them), and they no longer count toward keep. The open
    gates all have P > Phi(0) = 0.5, so with keep <= 0.5 the term is never met and keeps closing
    gates, and with keep > 0.5 it is met by open gates scaled down, however many have closed: keep
    is not the kept fraction, measure the eval gates. tau -> infinity gives plain target-keep over
    the open gates only. Not for "l0" or "params": the weighting reshapes a mean over gates, and
    params counts expected kept weight entries, which a reweighting would stop being.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    reg_sigma = _check_reg_sigma(reg_sigma)
    if kurtosis_tau is not None:
        tau = check_tau(kurtosis_tau)
        if kind != "target":
            raise ValueError(
                f"kurtosis_tau works with kind='target' only (the paper's objective), got kind={kind!r}; "
                "pass kurtosis_tau=None for 'l0' and 'params'"
            )
        return _kurtosis_target(model, 1.0 - _check_target(target), tau, reg_sigma)
    if kind == "l0" and target is not None:  # l0 pushes every gate shut: say so rather than drop target silently
        _check_target(target)
        warnings.warn(
            f"sparsity_penalty: kind='l0' ignores target={target!r} (it pushes every gate shut); "
            "use kind='target' or 'params' to aim at a sparsity, or pass target=None",
            stacklevel=2,
        )
    if kind == "params":
        return (expected_kept_fraction(model, reg_sigma) - (1.0 - _check_target(target))).abs()
    gates = [g for m in _layers(model).values() for g in m.gates()]
    means = torch.stack([g.prob_open(reg_sigma).mean() for g in gates])
    if kind == "l0":
        return means.mean()
    return (means - (1.0 - _check_target(target))).abs().mean()
