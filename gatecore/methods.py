"""One definition of each finetuning method: which adapters a model gets and what trains (docs/design.md §1-2).

    full        every weight trainable
    lora        LoRA on the preset targets (q, v for BERT-like models) + task head
    bias        the biases of the layers gates would wrap + task head (the control for `gates`)
    head        the task head only (linear probe: the floor)
    gates       row/column gates on every attention/FFN matrix (+ their biases when bias=True) + task head
    gates+lora  gates around W + BA, both trained, + task head

Every study, benchmark and the Trainer integration builds its model through `setup_method`, so a
method means the same thing everywhere.
"""

from __future__ import annotations

import torch
from torch import nn

from .checks import check_adapter_dtype
from .families import GATE_PRESETS, find_head, model_type
from .inject import add_gates, add_lora, find_targets, mark_trainable
from .parameters import gate_parameters, head_parameters, ids, lora_parameters

__all__ = [
    "METHODS",
    "GATE_METHODS",
    "LORA_METHODS",
    "setup_method",
    "param_groups",
    "gate_parameters",
    "lora_parameters",
    "head_parameters",
    "warmup_linear_schedule",
    "warmup_constant_schedule",
    "SCHEDULES",
    "lam_ramp",
]

METHODS = ("full", "lora", "bias", "head", "gates", "gates+lora")
GATE_METHODS = ("gates", "gates+lora")
LORA_METHODS = ("lora", "gates+lora")


def setup_method(
    model: nn.Module,
    method: str,
    *,
    lora_r: int = 8,
    lora_alpha: float = 16,
    sigma: float = 0.1,
    reg_sigma: float | None = None,
    bias: bool = True,
    gate_targets=None,
    lora_targets=None,
    adapter_dtype: torch.dtype | None = None,
) -> nn.Module:
    """Add the method's adapters to `model` and set its trainable parameters; returns the model.

    `bias` only matters for gate methods: train the gated layers' biases too (the paper's setting).
    `gate_targets` / `lora_targets` (name patterns) replace the family presets, e.g. to compare gates and
    LoRA on the same matrices; `bias` then means the biases of `gate_targets`.
    `adapter_dtype` (gatecore.add_gates): None puts gates and LoRA in float32 on a half-precision model.
    Validates first (method, head, targets), so a refused call leaves the model as it was.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if not isinstance(bias, bool):
        raise TypeError(f"bias must be True or False, got {bias!r}")
    check_adapter_dtype(None, adapter_dtype)
    if method != "full" and find_head(model) is None:
        raise ValueError(
            f"method {method!r} trains a task head, but {type(model).__name__} has none "
            "(expected a module named classifier/score/...): load a *ForSequenceClassification model"
        )
    mtype = model_type(model)
    if (method in GATE_METHODS or method == "bias") and gate_targets is None and mtype not in GATE_PRESETS:
        raise ValueError(
            f"no gate preset for model_type={mtype!r} (presets: {sorted(GATE_PRESETS)}); "
            "pass gate_targets=[...] (name patterns) for other models"
        )
    gate_targets = GATE_PRESETS[mtype] if gate_targets is None and mtype in GATE_PRESETS else gate_targets
    if method in GATE_METHODS or method == "bias":
        find_targets(model, gate_targets)  # every pattern must match, before any change
    if method in LORA_METHODS:
        add_lora(model, targets=lora_targets, r=lora_r, alpha=lora_alpha, adapter_dtype=adapter_dtype)
    if method in GATE_METHODS:
        add_gates(model, targets=gate_targets, sigma=sigma, reg_sigma=reg_sigma, adapter_dtype=adapter_dtype)
        mark_trainable(model, gates=True, lora=True, bias="gated" if bias else "none", head=True)
    elif method == "full":
        model.requires_grad_(True)
    else:
        mark_trainable(model, gates=False, lora=method == "lora", bias="none", head=True)
        if method == "bias":
            for mod in find_targets(model, gate_targets).values():
                if mod.bias is not None:
                    mod.bias.requires_grad_(True)
    return model


def param_groups(model: nn.Module, lr: float, head_lr: float | None = None, gate_lr: float | None = None) -> list[dict]:
    """AdamW groups of the trainable parameters: the rest at `lr`, the task head at `head_lr`, gates at `gate_lr`.

    None means `lr`. Empty groups are left out. Gates move from theta = 1 to below -0.55 to close, far
    more than other weights move, hence their own (usually much larger) rate.
    """
    gate_ids, head_ids = ids(gate_parameters(model)), ids(head_parameters(model))
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if id(p) not in gate_ids | head_ids], "lr": lr},
        {"params": [p for p in params if id(p) in head_ids], "lr": head_lr or lr},
        {"params": [p for p in params if id(p) in gate_ids], "lr": gate_lr or lr},
    ]
    return [g for g in groups if g["params"]]


def warmup_linear_schedule(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup: float = 0.06, warm_steps: int | None = None
):
    """Linear warm-up over `warmup` of the steps (or `warm_steps`), then linear decay to 0 (the studies' schedule)."""
    total = max(1, int(total_steps))
    warm = max(1, int(warmup * total) if warm_steps is None else int(warm_steps))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warm, max(0.0, (total - s) / (total - warm + 1e-9)))
    )


def warmup_constant_schedule(optimizer: torch.optim.Optimizer, total_steps: int, warmup: float = 0.06):
    """Linear warm-up over `warmup` of the steps, then the peak lr to the end (the paper's GLUE schedule shape)."""
    warm = max(1, int(warmup * max(1, int(total_steps))))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min((s + 1) / warm, 1.0))


SCHEDULES = {"linear": warmup_linear_schedule, "constant": warmup_constant_schedule}  # lr after the warm-up


def lam_ramp(step: int, total: int, warmup: float) -> float:
    """The sparsity weight's warm-up factor: 0 -> 1 linearly over the first `warmup` fraction of the steps."""
    return min(1.0, step / (warmup * total)) if warmup > 0 else 1.0
