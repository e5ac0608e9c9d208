"""Synthetic gate patterns: close gates so a known fraction of the gated weights becomes removable."""

from __future__ import annotations

import math

import torch
from torch import nn

from .accounting import GateReport, check_finite_gates, gate_report, gated_layers
from .checks import check_bool, check_fraction, check_int
from .compress_hidden import check_layout, hidden_sites
from .families import attention_parts, encoder_layers, family
from .gates import GatedLinear

CLOSED_THETA = -2.0  # tanh(-2) + 0.5 < 0: the eval gate is exactly 0


def _close(mod: nn.Module, side: str, idx: torch.Tensor) -> None:
    """Close the row or column gates `idx` of a GatedLinear; an ungated side is left alone."""
    if isinstance(mod, GatedLinear):
        gate = mod.row_gate if side == "row" else mod.col_gate
        if gate is not None:
            gate.theta.data[idx] = CLOSED_THETA


def _choose(n: int, k: int, g: torch.Generator) -> torch.Tensor:
    return torch.randperm(n, generator=g)[:k]


def _head_dims(heads: int, d: int, frac: float, g: torch.Generator) -> torch.Tensor:
    """round(frac * d) random dims in every head, as flat indices: the same count per head, so no padding."""
    k = round(frac * d)
    return torch.cat([h * d + _choose(d, k, g) for h in range(heads)])


def _bert_layer(layer: nn.Module, s: float, g: torch.Generator, kind: str) -> None:
    """A BERT-like or MPNet block (the same structure under other names)."""
    att, q, k, v, o = attention_parts(layer, kind)
    H, d = att.num_attention_heads, att.attention_head_size
    qk, vo = _head_dims(H, d, s, g), _head_dims(H, d, s, g)
    _close(q, "row", qk), _close(k, "row", qk)
    _close(v, "row", vo), _close(o, "col", vo)
    up = layer.intermediate.dense
    ffn = _choose(up.out_features, round(s * up.out_features), g)
    _close(up, "row", ffn), _close(layer.output.dense, "col", ffn)


def _llama_layer(layer: nn.Module, s: float, g: torch.Generator) -> None:
    att, mlp = layer.self_attn, layer.mlp
    d = att.head_dim
    H, KV, half = att.q_proj.out_features // d, att.k_proj.out_features // d, d // 2
    G = H // KV
    pairs = _choose(half, round(s * half), g)  # the same RoPE pairs in every head: no padding
    dims = torch.cat([pairs, pairs + half])
    _close(att.q_proj, "row", torch.cat([h * d + dims for h in range(H)]))
    _close(att.k_proj, "row", torch.cat([h * d + dims for h in range(KV)]))
    v_dims = [_choose(d, len(dims), g) for _ in range(KV)]  # as many as q/k dims: one head size, no padding
    _close(att.v_proj, "row", torch.cat([kv * d + v_dims[kv] for kv in range(KV)]))
    _close(att.o_proj, "col", torch.cat([h * d + v_dims[h // G] for h in range(H)]))
    ffn = _choose(mlp.up_proj.out_features, round(s * mlp.up_proj.out_features), g)
    _close(mlp.gate_proj, "row", ffn), _close(mlp.up_proj, "row", ffn), _close(mlp.down_proj, "col", ffn)


def _hidden_width(model: nn.Module, frac: float, g: torch.Generator) -> None:
    """Close round(frac * width) hidden-width gates of every reader (columns) and writer (rows), each its own set."""
    for _, _, mod, side in hidden_sites(model):
        n = mod.in_features if side == "in" else mod.out_features
        _close(mod, "col" if side == "in" else "row", _choose(n, round(frac * n), g))


@torch.no_grad()
def random_gate_pattern(
    model: nn.Module, sparsity: float, seed: int = 0, structured: bool = True, hidden: bool = False
) -> GateReport:
    """Close gates of a gated model at random, in place; returns its `gate_report`.

    structured=True: in every layer, a fraction `sparsity` of the FFN neurons (up row and down
    column; LLaMA also gate row), of each head's value/output dims (value row and output column)
    and of each head's query/key dims (query and key rows; LLaMA: whole RoPE pairs at the same
    positions in every head) is closed at both ends. Every count is the same in each head, so
    `compress` removes exactly what `gate_report` counts, with no padding.
    structured=False: every gate vector independently closes a random 1 - sqrt(1 - sparsity) of its
    entries (so about `sparsity` of each matrix is cut); `compress` then removes far less, since
    only structures closed at a matching end (docs/design.md §3) can go.
    hidden=True (structured only): the removal is spread over both widths, as trained gates spread it:
    the structures above at f = 1 - sqrt(1 - sparsity), and f of the hidden-width gates of every layer
    reading (columns) or writing (rows) the residual stream, an independent set per matrix, so each
    matrix loses 1 - (1 - f)^2 = sparsity. `compress(layout="hidden")` removes it all; the inner
    layout about f of it.
    """
    sparsity = check_fraction("sparsity", sparsity)
    check_int("seed", seed, 0)
    check_bool("structured", structured)
    check_bool("hidden", hidden)
    if hidden and not structured:
        raise ValueError("hidden=True spreads a structured pattern over the hidden width; it needs structured=True")
    if hidden:
        check_layout(model, "hidden")  # a family without listed hidden-width sites cannot spread the pattern
    layers = gated_layers(model)
    if not layers:
        raise ValueError("random_gate_pattern needs a gated model; call gatecore.add_gates first")
    check_finite_gates(model)  # the report at the end would refuse them, after the change
    kind = family(model) if structured else None
    g = torch.Generator().manual_seed(seed)
    if structured:
        frac = 1.0 - math.sqrt(1.0 - sparsity) if hidden else sparsity
        for layer in encoder_layers(model):
            if kind == "llama":
                _llama_layer(layer, frac, g)
            else:
                _bert_layer(layer, frac, g, kind)
        if hidden:
            _hidden_width(model, frac, g)
    else:
        frac = 1.0 - math.sqrt(1.0 - sparsity)
        for m in layers.values():
            for gate in m.gates():
                gate.theta.data[_choose(gate.n, round(frac * gate.n), g)] = CLOSED_THETA
    return gate_report(model)
