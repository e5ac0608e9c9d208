"""Compress one LLaMA-like layer: grouped heads, RoPE pairs, value dims, SwiGLU neurons (rules in compress.py)."""

from __future__ import annotations

import math

import torch
from torch import nn

from .fold import Folded, LayerSizes, fold, fold_constants, make_linear, pick


def rope_gather_hook(module: nn.Module, args, kwargs):
    """Forward pre-hook: keep only this layer's RoPE dims of the shared (cos, sin)."""
    cos, sin = kwargs["position_embeddings"]
    idx = module.gatecore_rope_dims
    kwargs["position_embeddings"] = (cos[..., idx], sin[..., idx])
    return args, kwargs


def set_rope_dims(att: nn.Module, dims: torch.Tensor | None) -> None:
    """Install (or, with None, remove) the cos/sin gather of a compressed attention module."""
    if getattr(att, "gatecore_rope_hook", None) is not None:
        att.gatecore_rope_hook.remove()
        att.gatecore_rope_hook = None
    if hasattr(att, "gatecore_rope_dims"):
        delattr(att, "gatecore_rope_dims")
    if dims is None:
        return
    att.register_buffer("gatecore_rope_dims", dims.to(torch.long), persistent=False)
    att.gatecore_rope_hook = att.register_forward_pre_hook(rope_gather_hook, with_kwargs=True)


def set_attention_sizes(att: nn.Module, head_dim: int, groups: int, rope_dims) -> None:
    """What LlamaAttention derives from its config, for this layer's own sizes."""
    att.head_dim, att.num_key_value_groups, att.scaling = head_dim, groups, head_dim**-0.5
    set_rope_dims(att, None if rope_dims is None else torch.as_tensor(rope_dims, device=att.q_proj.weight.device))


def compress_swiglu(gate: Folded, up: Folded, down: Folded, act) -> tuple[torch.Tensor, int]:
    """Kept neurons of down(act(gate x) * up x); act(b_gate) * b_up of weightless neurons folds into the down bias."""
    act0_zero = bool(act(gate.weight.new_zeros(1)) == 0)
    const = down.col_live() & ~gate.row_has_weights() & ~up.row_has_weights()
    fold_constants(down, const, act(gate.bias_or_zeros()[const]) * up.bias_or_zeros()[const])
    keep = down.col_live() & ~const & up.row_live() & (gate.row_live() | (not act0_zero))
    n = max(1, int(keep.sum()))
    return pick(keep, n), (n - int(keep.sum())) * 3 * gate.weight.shape[1]


def compress_llama_layer(layer: nn.Module) -> LayerSizes:
    att = layer.self_attn
    if hasattr(att, "q_norm"):
        raise ValueError("attention with per-head q/k norms (e.g. Qwen3) is not supported by compress")
    q, k, v = fold(att.q_proj), fold(att.k_proj), fold(att.v_proj)
    o = fold(att.o_proj)
    d, hidden = att.head_dim, q.weight.shape[1]
    H, KV, half = q.weight.shape[0] // d, k.weight.shape[0] // d, d // 2
    G = H // KV

    # RoPE mixes dims j and j + d/2: a pair is dead when both query rows or both key rows are
    q_pair = q.row_live().view(H, 2, half).any(1)
    k_pair = k.row_live().view(KV, 2, half).any(1)
    pair = q_pair & k_pair.repeat_interleave(G, 0)  # (H, half)
    vo = v.row_live().view(KV, 1, d) & o.col_live().view(KV, G, d)  # (KV, G, d) per query head
    alive = vo.any(-1)  # (KV, G)
    groups = [g for g in range(KV) if alive[g].any()] or [0]
    per_group = max(1, max(int(alive[g].sum()) for g in groups))
    heads = torch.cat([g * G + pick(alive[g], per_group) for g in groups])
    v_need = {g: vo[g][alive[g]].any(0) for g in groups}  # value dims some live head reads

    live_pairs = (pair & alive.flatten()[:, None]).any(0)  # cos/sin are shared by the layer's heads
    d_new = max(2, 2 * int(live_pairs.sum()), max(int(m.sum()) for m in v_need.values()))
    d_new += d_new % 2
    pairs = pick(live_pairs, d_new // 2)
    qk_dims = torch.cat([pairs, pairs + half])
    v_dims = {g: pick(v_need[g], d_new) for g in groups}
    q_rows = torch.cat([h * d + qk_dims for h in heads.tolist()])
    k_rows = torch.cat([g * d + qk_dims for g in groups])
    v_rows = torch.cat([g * d + v_dims[g] for g in groups])
    o_cols = torch.cat([h * d + v_dims[h // G] for h in heads.tolist()])

    # cost of the uniform rule: rows/columns of q, k, v, o kept beyond what some live head needs
    live = alive.flatten()
    need = (
        2 * pair[live].sum()  # q rows
        + sum(2 * pair[g * G : (g + 1) * G][alive[g]].any(0).sum() for g in groups)  # k rows
        + sum(m.sum() for m in v_need.values())
        + vo.view(H, d)[live].sum()
    )  # v rows, o columns
    padding = (2 * (len(heads) + len(groups)) * d_new - int(need)) * hidden

    att.q_proj = make_linear(q, rows=q_rows, row_scale=math.sqrt(d_new / d))  # keeps the 1/sqrt(d) softmax scale
    att.k_proj = make_linear(k, rows=k_rows)
    att.v_proj = make_linear(v, rows=v_rows)
    att.o_proj = make_linear(o, cols=o_cols)
    old = getattr(att, "gatecore_rope_dims", None)
    rope = qk_dims if old is None else old[qk_dims]
    full = old is None and d_new == d
    set_attention_sizes(att, d_new, per_group, None if full else rope)

    mlp = layer.mlp
    gate, up, down = fold(mlp.gate_proj), fold(mlp.up_proj), fold(mlp.down_proj)
    neurons, ffn_padding = compress_swiglu(gate, up, down, mlp.act_fn)
    mlp.gate_proj, mlp.up_proj = make_linear(gate, rows=neurons), make_linear(up, rows=neurons)
    mlp.down_proj = make_linear(down, cols=neurons)
    if hasattr(mlp, "intermediate_size"):
        mlp.intermediate_size = len(neurons)
    return LayerSizes(
        heads=len(heads),
        kv_heads=len(groups),
        head_dim=d_new,
        intermediate=len(neurons),
        padding_weights=padding + ffn_padding,
        rope_dims=None if full else rope.tolist(),
    )
