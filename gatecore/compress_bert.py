"""Compress one BERT/RoBERTa layer: attention heads and dims, FFN neurons (rules in compress.py)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .fold import Folded, LayerSizes, fold, fold_constants, make_linear, pick


def set_attention_sizes(att: nn.Module, heads: int, head_dim: int) -> None:
    """What BertSelfAttention derives from its config, for this layer's own sizes."""
    att.num_attention_heads, att.attention_head_size = heads, head_dim
    att.all_head_size = heads * head_dim
    att.scaling = head_dim**-0.5


def compress_ffn(up: Folded, down: Folded, act) -> tuple[torch.Tensor, int]:
    """Kept neurons of act(up x) -> down, folding constant neurons act(b_up) into the down bias."""
    has_w = up.row_has_weights()
    used = down.col_live()
    const = used & ~has_w
    fold_constants(down, const, act(up.bias_or_zeros()[const]))
    keep = used & has_w
    n = max(1, int(keep.sum()))
    return pick(keep, n), (n - int(keep.sum())) * 2 * up.weight.shape[1]


def compress_layer_ffn(layer: nn.Module) -> tuple[torch.Tensor, int]:
    """The FFN of a BERT-like or MPNet layer (intermediate.dense -> output.dense), rebuilt on its kept neurons."""
    up, down = fold(layer.intermediate.dense), fold(layer.output.dense)
    neurons, padding = compress_ffn(up, down, layer.intermediate.intermediate_act_fn)
    layer.intermediate.dense = make_linear(up, rows=neurons)
    layer.output.dense = make_linear(down, cols=neurons)
    return neurons, padding


def compress_heads(q: Folded, k: Folded, v: Folded, o: Folded, H: int, d: int):
    """The kept heads of folded q, k, v, o (H heads of dim d) and the rebuilt linears, all heads at one dim d_new.

    A query/key dim counts when both rows are live; a value dim when its value row and output column are;
    a head goes when none of its value dims is live. Returns (heads, d_new, (q, k, v, o), padding weights).
    """
    hidden = q.weight.shape[1]
    qk = (q.row_live() & k.row_live()).view(H, d)
    vo = (v.row_live() & o.col_live()).view(H, d)
    heads = [h for h in range(H) if vo[h].any()]
    need_qk = [int(qk[h].sum()) for h in heads]
    need_v = [int(vo[h].sum()) for h in heads]
    d_new = max([1] + need_qk + need_v)
    if not heads:  # nothing reaches the output: keep one zero head so the kernels still run
        heads, need_qk, need_v = [0], [0], [0]
    qk_rows = torch.cat([h * d + pick(qk[h], d_new) for h in heads])
    v_rows = torch.cat([h * d + pick(vo[h], d_new) for h in heads])
    padding = sum(d_new - n for n in need_qk + need_v) * 2 * hidden  # q+k rows, or v row + o column
    # the module will scale by d_new^-0.5; the query rows carry sqrt(d_new/d) so q.k / sqrt(d) is kept
    linears = (
        make_linear(q, rows=qk_rows, row_scale=math.sqrt(d_new / d)),
        make_linear(k, rows=qk_rows),
        make_linear(v, rows=v_rows),
        make_linear(o, cols=v_rows),
    )
    return heads, d_new, linears, padding


def compress_bert_layer(layer: nn.Module) -> LayerSizes:
    att = layer.attention.self
    q, k, v = fold(att.query), fold(att.key), fold(att.value)
    o = fold(layer.attention.output.dense)
    heads, d_new, linears, padding = compress_heads(q, k, v, o, att.num_attention_heads, att.attention_head_size)
    att.query, att.key, att.value, layer.attention.output.dense = linears
    set_attention_sizes(att, len(heads), d_new)

    neurons, ffn_padding = compress_layer_ffn(layer)
    return LayerSizes(
        heads=len(heads),
        kv_heads=len(heads),
        head_dim=d_new,
        intermediate=len(neurons),
        padding_weights=padding + ffn_padding,
    )
