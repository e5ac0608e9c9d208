"""Put gates / LoRA on the linear layers of a model, in place, all or nothing.

A target pattern is a regular expression matched against the end of a
module's dotted name at a dot boundary: "query" matches
"bert.encoder.layer.0.attention.self.query"; "layer\\.0\\..*" matches every
module under layer 0. `targets=None` uses the preset of the model's type
(gatecore.families: every attention/FFN matrix for gates, q and v for LoRA).
"""

from __future__ import annotations

import re
from typing import Iterable

import torch
from torch import nn

from .checks import (
    check_adapter_dtype,
    check_bool,
    check_fraction,
    check_int,
    check_patterns,
    check_positive,
    check_real,
)
from .families import HEAD_NAMES, find_head, gate_targets, lora_targets
from .gates import GatedLinear
from .lora import LoRALinear


def _matches(pattern: str, name: str) -> bool:
    return re.search(r"(?:^|\.)(?:" + pattern + r")$", name) is not None


def _inside_wrapper(model: nn.Module, name: str) -> bool:
    """True for the `base` (and deeper) of a GatedLinear/LoRALinear."""
    parts = name.split(".")
    for i in range(1, len(parts)):
        if isinstance(model.get_submodule(".".join(parts[:i])), (GatedLinear, LoRALinear)):
            return True
    return False


def find_targets(model: nn.Module, targets: Iterable[str] | str) -> dict[str, nn.Module]:
    """Modules whose name matches any pattern; every pattern must match something."""
    targets = check_patterns(targets)
    names = [n for n, _ in model.named_modules() if n and not _inside_wrapper(model, n)]
    found: dict[str, nn.Module] = {}
    for p in targets:
        try:
            hits = [n for n in names if _matches(p, n)]
        except re.error as e:
            raise ValueError(f"target pattern {p!r} is not a valid regular expression: {e}") from None
        if not hits:
            linear = [
                n
                for n, m in model.named_modules()
                if isinstance(m, (nn.Linear, GatedLinear, LoRALinear)) and not _inside_wrapper(model, n)
            ]
            shown = ", ".join(linear[:40]) + (f", ... ({len(linear)} in all)" if len(linear) > 40 else "")
            raise ValueError(f"target pattern {p!r} matches no module. Linear modules: {shown}")
        for n in hits:
            found[n] = model.get_submodule(n)
    return found


def set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the submodule at dotted `name` by `new` (the model itself is never replaced)."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def _check_gate_options(rows, cols, sigma, reg_sigma, init_mean, init_std) -> None:
    """The numbers and flags of add_gates, checked before any layer is wrapped."""
    rows, cols = check_bool("rows", rows), check_bool("cols", cols)
    if not (rows or cols):
        raise ValueError("add_gates needs rows=True, cols=True or both")
    check_positive("sigma", sigma)
    if reg_sigma is not None:
        check_positive("reg_sigma", reg_sigma)
    check_real("init_mean", init_mean)
    check_real("init_std", init_std, low=0)


def add_gates(
    model: nn.Module,
    targets=None,
    rows: bool = True,
    cols: bool = True,
    sigma: float = 0.1,
    reg_sigma: float | None = None,
    init_mean: float = 1.0,
    init_std: float = 0.1,
    adapter_dtype: torch.dtype | None = None,
) -> dict[str, GatedLinear]:
    """Wrap each targeted `nn.Linear` (or `LoRALinear`) in a `GatedLinear`, in place.

    `targets=None` uses the preset for `model.config.model_type` (BERT-like:
    query, key, value, attention output, intermediate, output; LLaMA-like:
    q, k, v, o, gate, up, down). `adapter_dtype` None: gate thetas in float32 on
    a half-precision model (bfloat16 rounds small updates of theta away), else in
    the model's dtype; a torch.dtype (e.g. the model's) sets it. Everything is
    checked before anything is changed, so a failed call leaves the model as it was.
    """
    _check_gate_options(rows, cols, sigma, reg_sigma, init_mean, init_std)
    check_adapter_dtype(None, adapter_dtype)
    found = find_targets(model, gate_targets(model) if targets is None else targets)
    for name, mod in found.items():
        if isinstance(mod, GatedLinear):
            raise ValueError(f"{name} already has gates; wrapping it twice is not allowed")
        if not isinstance(mod, (nn.Linear, LoRALinear)):
            raise TypeError(f"target {name} is a {type(mod).__name__}, not an nn.Linear")
    wrapped = {
        n: GatedLinear(
            m,
            rows=rows,
            cols=cols,
            sigma=sigma,
            reg_sigma=reg_sigma,
            init_mean=init_mean,
            init_std=init_std,
            adapter_dtype=adapter_dtype,
        )
        for n, m in found.items()
    }
    for n, g in wrapped.items():
        set_module(model, n, g)
    return wrapped


def add_lora(
    model: nn.Module,
    targets=None,
    r: int = 8,
    alpha: float = 16,
    dropout: float = 0.0,
    adapter_dtype: torch.dtype | None = None,
) -> dict[str, LoRALinear]:
    """Give each targeted `nn.Linear` a LoRA update, in place (default: q and v).

    A `GatedLinear` target gets LoRA inside its gates (gates around W + BA).
    r: an integer in [1, min(in_features, out_features)] of every target (a larger rank adds
    nothing but parameters); alpha: finite, > 0 (the update is scaled by alpha / r);
    dropout: in [0, 1); adapter_dtype: as in `add_gates` (None: float32 A and B on a half-precision model).
    """
    check_int("LoRA rank r", r, 1, what="a positive integer")
    check_adapter_dtype(None, adapter_dtype)
    check_positive("LoRA alpha", alpha)
    check_fraction("LoRA dropout", dropout)
    found = find_targets(model, lora_targets(model) if targets is None else targets)
    inner = {}
    for name, mod in found.items():
        base, inner_name = (mod.base, name + ".base") if isinstance(mod, GatedLinear) else (mod, name)
        if isinstance(base, LoRALinear):
            raise ValueError(f"{name} already has LoRA; wrapping it twice is not allowed")
        if not isinstance(base, nn.Linear):
            raise TypeError(f"target {name} is a {type(mod).__name__}, not an nn.Linear")
        check_int(
            f"LoRA rank r for {name} ({base.out_features} x {base.in_features})",
            r,
            1,
            min(base.in_features, base.out_features),
            what="a positive integer",
        )
        inner[inner_name] = base
    plan = {
        n: LoRALinear(base, r=r, alpha=alpha, dropout=dropout, adapter_dtype=adapter_dtype) for n, base in inner.items()
    }
    for n, l in plan.items():
        set_module(model, n, l)
    return plan


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every `LoRALinear` by its merged plain `nn.Linear`, in place."""
    for name, mod in [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]:
        set_module(model, name, mod.merge())
    return model


def mark_trainable(
    model: nn.Module, gates: bool = True, lora: bool = True, bias: str = "gated", head: bool = True
) -> nn.Module:
    """Freeze everything, then unfreeze the chosen groups (all options are checked first).

    bias: "gated" (biases of gated layers, as the authors train them),
    "none", or "all" (every parameter named *bias, LayerNorm included).
    """
    if not isinstance(bias, str) or bias not in ("gated", "none", "all"):
        raise ValueError(f"bias must be 'gated', 'none' or 'all', got {bias!r}")
    for name, flag in (("gates", gates), ("lora", lora), ("head", head)):
        check_bool(name, flag)
    h = find_head(model) if head else None
    if head and h is None:  # checked before anything is frozen
        raise ValueError(
            f"head=True but no task head found; looked for children named {HEAD_NAMES}. "
            "Pass head=False for a model without one."
        )
    model.requires_grad_(False)
    for mod in model.modules():
        if isinstance(mod, GatedLinear):
            for g in mod.gates():
                g.theta.requires_grad_(gates)
            if bias == "gated" and mod.bias is not None:
                mod.bias.requires_grad_(True)
        if isinstance(mod, LoRALinear) and lora:
            mod.lora_A.requires_grad_(True)
            mod.lora_B.requires_grad_(True)
    if bias == "all":
        for n, p in model.named_parameters():
            if n.split(".")[-1] == "bias":
                p.requires_grad_(True)
    if h is not None:
        h[1].requires_grad_(True)
    return model
