"""Compress one MPNet layer: attention heads and dims, FFN neurons (rules in compress.py).

MPNet's attention differs from BERT's in one way that matters here: every layer adds a relative-position
bias to its scores, one (query, key) table per head, computed once by the encoder from a shared
embedding and passed to every layer,

    scores_h = q_h . k_h / sqrt(d) + bias_h + mask

A layer that loses heads must add the bias of the heads it kept, not of the first ones: a forward
pre-hook on its attention module gathers them (`gatecore_heads`, indices into the original heads,
recorded per layer as `LayerSizes.heads_kept`). The shared embedding itself is left whole, so the
bias is exact in every layer. MPNet scales the scores by the module's own `attention_head_size`, so
the query rows carry sqrt(d'/d) as for BERT.
"""

from __future__ import annotations

import torch
from torch import nn

from .compress_bert import compress_heads, compress_layer_ffn
from .fold import LayerSizes, fold


def head_bias_hook(module: nn.Module, args, kwargs):
    """Forward pre-hook: keep only this layer's heads of the shared position bias (batch, heads, q, k)."""
    idx = module.gatecore_heads
    if len(args) > 2 and args[2] is not None:
        args = (*args[:2], args[2].index_select(1, idx), *args[3:])
    elif kwargs.get("position_bias") is not None:
        kwargs["position_bias"] = kwargs["position_bias"].index_select(1, idx)
    return args, kwargs


def set_attention_sizes(att: nn.Module, heads: int, head_dim: int, heads_kept) -> None:
    """What MPNetSelfAttention derives from its config, for this layer's own sizes, and the bias gather
    (None: the layer keeps every original head in order, no gather)."""
    att.num_attention_heads, att.attention_head_size = heads, head_dim
    att.all_head_size = heads * head_dim
    if getattr(att, "gatecore_heads_hook", None) is not None:
        att.gatecore_heads_hook.remove()
        att.gatecore_heads_hook = None
    if hasattr(att, "gatecore_heads"):
        delattr(att, "gatecore_heads")
    if heads_kept is None:
        return
    att.register_buffer(
        "gatecore_heads", torch.as_tensor(heads_kept, dtype=torch.long, device=att.q.weight.device), persistent=False
    )
    att.gatecore_heads_hook = att.register_forward_pre_hook(head_bias_hook, with_kwargs=True)


def compress_mpnet_layer(layer: nn.Module) -> LayerSizes:
    att = layer.attention.attn
    q, k, v, o = fold(att.q), fold(att.k), fold(att.v), fold(att.o)
    H = att.num_attention_heads
    heads, d_new, linears, padding = compress_heads(q, k, v, o, H, att.attention_head_size)
    att.q, att.k, att.v, att.o = linears
    old = getattr(att, "gatecore_heads", None)  # a layer compressed before: indices into its original heads
    kept = [int(old[h]) for h in heads] if old is not None else heads
    full = old is None and heads == list(range(H))
    set_attention_sizes(att, len(heads), d_new, None if full else kept)

    neurons, ffn_padding = compress_layer_ffn(layer)
    return LayerSizes(
        heads=len(heads),
        kv_heads=len(heads),
        head_dim=d_new,
        intermediate=len(neurons),
        padding_weights=padding + ffn_padding,
        heads_kept=None if full else kept,
    )
