"""The parameter groups every report and optimiser separates (docs/design.md §2: gate parameters, LoRA
parameters, biases and task head are always counted apart): one definition of each group."""

from __future__ import annotations

from torch import nn

from .families import find_head
from .gates import Gate
from .lora import LoRALinear


def gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The gate thetas of the model (the parameters that get the gate learning rate)."""
    return [m.theta for m in model.modules() if isinstance(m, Gate)]


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The LoRA factors, A then B of each LoRALinear, in module order."""
    return [p for m in model.modules() if isinstance(m, LoRALinear) for p in (m.lora_A, m.lora_B)]


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The task head's parameters (`find_head`); none for a model without a head."""
    found = find_head(model)
    return [] if found is None else list(found[1].parameters())


def ids(params) -> set[int]:
    """The identity set of a parameter list, for membership tests that must not compare tensor values."""
    return {id(p) for p in params}
