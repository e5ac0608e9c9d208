"""Put gates / LoRA on the linear layers of a model, in place, all or nothing.

A target pattern is a regular expression matched against the end of a
module's dotted name at a dot boundary: "query" matches
"bert.encoder.layer.0.attention.self.query"; "layer\\.0\\..*" matches every
module under layer 0.
"""
from __future__ import annotations

import re
from typing import Iterable

from torch import nn

from .gates import GatedLinear
from .lora import LoRALinear

_BERT_LIKE = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie")
_LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo", "olmo2")

_BERT_ALL = [r"attention\.self\.(query|key|value)", r"attention\.output\.dense",
             r"layer\.\d+\.intermediate\.dense", r"layer\.\d+\.output\.dense"]
_LLAMA_ALL = [r"self_attn\.(q|k|v|o)_proj", r"mlp\.(gate|up|down)_proj"]

GATE_PRESETS = {**{t: _BERT_ALL for t in _BERT_LIKE}, **{t: _LLAMA_ALL for t in _LLAMA_LIKE}}
LORA_PRESETS = {**{t: [r"attention\.self\.(query|value)"] for t in _BERT_LIKE},
                **{t: [r"self_attn\.(q|v)_proj"] for t in _LLAMA_LIKE}}

HEAD_NAMES = ("classifier", "score", "qa_outputs", "lm_head", "cls", "head")


def _preset(model: nn.Module, presets: dict, what: str) -> list[str]:
    mtype = getattr(getattr(model, "config", None), "model_type", None)
    if mtype not in presets:
        raise ValueError(f"no default {what} targets for model_type={mtype!r}; presets exist for "
                         f"{sorted(presets)}. Pass targets=[...] (name patterns) to use any model.")
    return presets[mtype]


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
    if isinstance(targets, str):
        targets = [targets]
    targets = list(targets)
    if not targets:
        raise ValueError("targets is empty")
    names = [n for n, _ in model.named_modules() if n and not _inside_wrapper(model, n)]
    found: dict[str, nn.Module] = {}
    for p in targets:
        try:
            hits = [n for n in names if _matches(p, n)]
        except re.error as e:
            raise ValueError(f"target pattern {p!r} is not a valid regular expression: {e}") from None
        if not hits:
            linear = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, GatedLinear, LoRALinear))
                      and not _inside_wrapper(model, n)]
            shown = ", ".join(linear[:40]) + (f", ... ({len(linear)} in all)" if len(linear) > 40 else "")
            raise ValueError(f"target pattern {p!r} matches no module. Linear modules: {shown}")
        for n in hits:
            found[n] = model.get_submodule(n)
    return found


def _set_module(model: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def add_gates(model: nn.Module, targets=None, rows: bool = True, cols: bool = True, sigma: float = 0.1,
              reg_sigma: float | None = None, init_mean: float = 1.0, init_std: float = 0.1) -> dict[str, GatedLinear]:
    """Wrap each targeted `nn.Linear` (or `LoRALinear`) in a `GatedLinear`, in place.

    `targets=None` uses the preset for `model.config.model_type` (BERT-like:
    query, key, value, attention output, intermediate, output; LLaMA-like:
    q, k, v, o, gate, up, down). Everything is checked before anything is
    changed, so a failed call leaves the model as it was.
    """
    found = find_targets(model, _preset(model, GATE_PRESETS, "gate") if targets is None else targets)
    for name, mod in found.items():
        if isinstance(mod, GatedLinear):
            raise ValueError(f"{name} already has gates; wrapping it twice is not allowed")
        if not isinstance(mod, (nn.Linear, LoRALinear)):
            raise TypeError(f"target {name} is a {type(mod).__name__}, not an nn.Linear")
    wrapped = {n: GatedLinear(m, rows=rows, cols=cols, sigma=sigma, reg_sigma=reg_sigma,
                              init_mean=init_mean, init_std=init_std) for n, m in found.items()}
    for n, g in wrapped.items():
        _set_module(model, n, g)
    return wrapped


def add_lora(model: nn.Module, targets=None, r: int = 8, alpha: float = 16, dropout: float = 0.0) -> dict[str, LoRALinear]:
    """Give each targeted `nn.Linear` a LoRA update, in place (default: q and v).

    A `GatedLinear` target gets LoRA inside its gates (gates around W + BA).
    """
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise ValueError(f"LoRA rank r must be a positive integer, got {r!r}")
    found = find_targets(model, _preset(model, LORA_PRESETS, "LoRA") if targets is None else targets)
    plan = {}
    for name, mod in found.items():
        inner, inner_name = (mod.base, name + ".base") if isinstance(mod, GatedLinear) else (mod, name)
        if isinstance(inner, LoRALinear):
            raise ValueError(f"{name} already has LoRA; wrapping it twice is not allowed")
        if not isinstance(inner, nn.Linear):
            raise TypeError(f"target {name} is a {type(mod).__name__}, not an nn.Linear")
        plan[inner_name] = LoRALinear(inner, r=r, alpha=alpha, dropout=dropout)
    for n, l in plan.items():
        _set_module(model, n, l)
    return plan


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every `LoRALinear` by its merged plain `nn.Linear`, in place."""
    for name, mod in [(n, m) for n, m in model.named_modules() if isinstance(m, LoRALinear)]:
        _set_module(model, name, mod.merge())
    return model


def find_head(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The task head: the first of `HEAD_NAMES` that is a direct child of the model."""
    for name in HEAD_NAMES:
        mod = getattr(model, name, None)
        if isinstance(mod, nn.Module):
            return name, mod
    return None


def mark_trainable(model: nn.Module, gates: bool = True, lora: bool = True, bias: str = "gated",
                   head: bool = True) -> nn.Module:
    """Freeze everything, then unfreeze the chosen groups.

    bias: "gated" (biases of gated layers, as the authors train them),
    "none", or "all" (every parameter named *bias, LayerNorm included).
    """
    if bias not in ("gated", "none", "all"):
        raise ValueError(f"bias must be 'gated', 'none' or 'all', got {bias!r}")
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
    if head:
        h = find_head(model)
        if h is None:
            raise ValueError(f"head=True but no task head found; looked for children named {HEAD_NAMES}")
        h[1].requires_grad_(True)
    return model
