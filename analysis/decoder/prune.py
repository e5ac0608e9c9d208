"""Pruning baselines without training: close the same number of rows and columns per gated matrix as a reference.

For a gated matrix W (out x in) and per-input activation scale a (a_j = sqrt(mean over calibration tokens of x_j^2);
a = 1 for plain magnitude), the entry score is S_ij = |W_ij| a_j (Wanda's score) and

    row score_i = ||S_i,:||_2        column score_j = ||S_:,j||_2 = a_j ||W_:,j||_2

Each matrix side closes its k lowest-scoring rows (columns), k taken from the reference's gates (e.g. trained
gates at the same removed fraction). Same counts per matrix side give exactly the same removed fraction
(1 - rows_kept * cols_kept / (out * in) per matrix), so only *which* rows and columns differ. The allocation
across matrices and layers is the reference's: the baselines borrow it (docs/decoder.md).
"""

from __future__ import annotations

import torch

import gatecore
from gatecore.patterns import CLOSED_THETA

SCORES = ("magnitude", "activation")
OPEN_THETA = 1.0  # tanh(1) + 0.5 > 1: eval gate exactly 1


@torch.no_grad()
def activation_rms(model, chunks: torch.Tensor, batch: int = 8) -> dict[str, torch.Tensor]:
    """{gated layer name: a} with a_j = sqrt(mean of x_j^2) over every token of `chunks`, the layer's input.

    `model` is gated (names of its GatedLinear layers); run it with all gates open for the dense activations.
    """
    layers = gatecore.gated_layers(model)
    sums = {n: torch.zeros(m.in_features, dtype=torch.float64) for n, m in layers.items()}
    counts = {n: 0 for n in layers}

    def hook(name):
        def fn(_mod, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1])
            sums[name] += x.double().pow(2).sum(0).cpu()
            counts[name] += x.shape[0]

        return fn

    handles = [m.register_forward_pre_hook(hook(n)) for n, m in layers.items()]
    model.eval()
    device = next(model.parameters()).device
    try:
        for i in range(0, len(chunks), batch):
            model(input_ids=chunks[i : i + batch].to(device))
    finally:
        for h in handles:
            h.remove()
    return {n: (sums[n] / max(1, counts[n])).sqrt().float() for n in layers}


def side_scores(weight: torch.Tensor, act: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(row scores, column scores) of S = |W| * a (a broadcast over rows; None: a = 1)."""
    s = weight.detach().abs().float()
    if act is not None:
        s = s * act.to(s.device, s.dtype)[None, :]
    return s.norm(dim=1), s.norm(dim=0)


def closed_counts(reference) -> dict[str, tuple[int, int]]:
    """{gated layer: (rows closed, columns closed)} of a gated model's eval gates."""
    return {
        l.name: (l.out_features - l.rows_kept, l.in_features - l.cols_kept)
        for l in gatecore.gate_report(reference).layers
    }


@torch.no_grad()
def prune_like(model, counts: dict[str, tuple[int, int]], acts: dict[str, torch.Tensor] | None = None) -> None:
    """Close, in the gated `model` (all gates open), the lowest-scoring rows/columns: `counts[name]` of each.

    acts=None: magnitude scores; else the activation-weighted scores with a = acts[name]. Checked first: every
    name must be a gated layer of `model` with row and column gates, every count within its side.
    """
    layers = gatecore.gated_layers(model)
    for name, (r, c) in counts.items():
        m = layers.get(name)
        if m is None or m.row_gate is None or m.col_gate is None:
            raise ValueError(f"{name} is not a gated layer with row and column gates in this model")
        if not (0 <= r <= m.out_features and 0 <= c <= m.in_features):
            raise ValueError(
                f"{name}: cannot close {r} rows / {c} columns of a {m.out_features} x {m.in_features} matrix"
            )
        if acts is not None and name not in acts:
            raise ValueError(f"no activation statistics for {name}")
    for name, (r, c) in counts.items():
        m = layers[name]
        rows, cols = side_scores(m.weight, None if acts is None else acts[name])
        m.row_gate.theta[rows.argsort()[:r]] = CLOSED_THETA
        m.col_gate.theta[cols.argsort()[:c]] = CLOSED_THETA


@torch.no_grad()
def open_gates_to_one(model) -> None:
    """Set every open eval gate to exactly 1 (theta = 1: clamp(tanh(1) + 0.5) = 1), closed ones stay: the trained
    selection without the trained scales."""
    for m in gatecore.gated_layers(model).values():
        for g in m.gates():
            g.theta[g.eval_gate() > 0] = OPEN_THETA
