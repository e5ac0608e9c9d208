"""LoRA adapter (Hu et al. 2021), as in loralib/peft (docs/design.md §2).

    y = W x + b + (alpha / r) * B A dropout(x)
    A (r x in): kaiming-uniform(a=sqrt 5);  B (out x r): zeros

A and B are float32 on a half-precision layer (PEFT's convention, `checks.check_adapter_dtype`) and are
cast to the weight's dtype in the forward, so the matmuls run in the model's dtype.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .checks import check_adapter_dtype, check_fraction, check_int, check_positive


class LoRALinear(nn.Module):
    """A frozen `nn.Linear` plus a trainable rank-r update; `merge()` folds it in.

    r in [1, min(in, out)], alpha finite and > 0, dropout in [0, 1); adapter_dtype None: float32 on a
    half-precision layer, else the layer's dtype.
    """

    def __init__(
        self,
        base: nn.Linear,
        r: int = 8,
        alpha: float = 16,
        dropout: float = 0.0,
        adapter_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        r = check_int("LoRA rank r", r, 1, min(base.in_features, base.out_features), what="a positive integer")
        alpha = check_positive("LoRA alpha", alpha)
        dropout = check_fraction("LoRA dropout", dropout)
        self.base = base
        self.r, self.alpha = r, alpha
        self.scaling = self.alpha / r
        w = base.weight
        dtype = check_adapter_dtype(w.dtype, adapter_dtype)
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=w.device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=w.device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.train(base.training)  # a wrapper joins the model in its current mode

    in_features = property(lambda self: self.base.in_features)
    out_features = property(lambda self: self.base.out_features)
    weight = property(lambda self: self.base.weight)
    bias = property(lambda self: self.base.bias)

    def delta_weight(self) -> torch.Tensor:
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = self.weight.dtype  # float32 adapters meet a half-precision layer in its dtype (a no-op otherwise)
        return self.base(x) + (self.dropout(x) @ self.lora_A.to(dt).T @ self.lora_B.to(dt).T) * self.scaling

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain `nn.Linear` with weight W + (alpha/r) B A and the same bias."""
        b = self.base
        out = nn.Linear(
            b.in_features, b.out_features, bias=b.bias is not None, device=b.weight.device, dtype=b.weight.dtype
        )
        out.weight.copy_(b.weight + self.delta_weight())
        if b.bias is not None:
            out.bias.copy_(b.bias)
        out.weight.requires_grad_(b.weight.requires_grad)
        if b.bias is not None:
            out.bias.requires_grad_(b.bias.requires_grad)
        return out

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}"
