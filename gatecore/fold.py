"""Folding gates into plain tensors, and the pieces every layer compressor shares (docs/design.md §3).

    W' = diag(z_r) W diag(z_c),   b' = z_r * b          (eval gates z; LoRA merged before)

`compress_bert`, `compress_mpnet` and `compress_llama` build their smaller layers from these; `compress` drives them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .gates import GatedLinear


@dataclass
class Folded:
    """A linear layer with its gates (and LoRA) folded into plain tensors."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    requires_grad: bool

    def row_live(self) -> torch.Tensor:
        """Rows whose output is not identically zero."""
        live = (self.weight != 0).any(1)
        return live | (self.bias != 0) if self.bias is not None else live

    def row_has_weights(self) -> torch.Tensor:
        return (self.weight != 0).any(1)

    def col_live(self) -> torch.Tensor:
        return (self.weight != 0).any(0)

    def bias_or_zeros(self) -> torch.Tensor:
        return self.bias if self.bias is not None else self.weight.new_zeros(self.weight.shape[0])


def fold(mod: nn.Module) -> Folded:
    """W' = diag(z_r) W diag(z_c), b' = z_r * b for a GatedLinear; a plain nn.Linear as is."""
    if isinstance(mod, GatedLinear):
        z_r, z_c = mod.eval_gates()
        w, b = mod.base.weight, mod.base.bias
        # float32 gates of a half-precision layer: folded in float32, rounded once to the layer's dtype
        return Folded(
            (z_r[:, None] * w * z_c[None, :]).to(w.dtype), None if b is None else (b * z_r).to(b.dtype), w.requires_grad
        )
    if isinstance(mod, nn.Linear):
        return Folded(
            mod.weight.detach().clone(),
            None if mod.bias is None else mod.bias.detach().clone(),
            mod.weight.requires_grad,
        )
    raise TypeError(f"expected an nn.Linear or GatedLinear, got {type(mod).__name__}")


def make_linear(f: Folded, rows=None, cols=None, row_scale: float = 1.0) -> nn.Linear:
    """A plain nn.Linear holding W'[rows][:, cols] (rows times row_scale) and b'[rows]."""
    w = f.weight if rows is None else f.weight[rows]
    w = w if cols is None else w[:, cols]
    b = None if f.bias is None else (f.bias if rows is None else f.bias[rows])
    if row_scale != 1.0:
        w, b = w * row_scale, None if b is None else b * row_scale
    out = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    out.weight.data.copy_(w)
    out.weight.requires_grad_(f.requires_grad)
    if b is not None:
        out.bias.data.copy_(b)
        out.bias.requires_grad_(f.requires_grad)
    return out


def pick(live: torch.Tensor, n: int) -> torch.Tensor:
    """Sorted indices of the live entries, padded with the first dead ones up to n."""
    idx = torch.cat([live.nonzero().flatten(), (~live).nonzero().flatten()])
    return idx[:n].sort().values


def fold_constants(down: Folded, const: torch.Tensor, values: torch.Tensor) -> None:
    """Move constant-valued neurons into the down bias: b += W[:, const] @ values, then W[:, const] = 0.

    Zeroing the columns makes those neurons dead, so one kept as padding contributes nothing twice.
    """
    if not const.any() or not (values != 0).any():
        return
    extra = down.weight[:, const] @ values
    down.bias = extra if down.bias is None else down.bias + extra
    down.weight[:, const] = 0


@dataclass
class LayerSizes:
    """What one compressed layer kept; `padding_weights` is the cost of the uniform head rule."""

    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    padding_weights: int
    rope_dims: list[int] | None = None  # LLaMA: indices into the full rotary dim, when fewer pairs are kept
    heads_kept: list[int] | None = None  # MPNet: the original heads kept (their rows of the shared position bias)
