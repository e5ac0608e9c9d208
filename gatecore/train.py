"""The one training loop: task loss + the sparsity objective, backward, optimizer and scheduler step, controller
update (docs/design.md §8, "One training loop").

    objective = Objective(lam=1.0, objective="params", lam_warmup=0.2)
    ctl = SparsityController("params", removed=0.3, start=0.2)
    train_loop(model, batches, loss_fn, opt, scheduler=sched, objective=objective, controller=ctl)

The objective of step s (s = steps already done, of `total`):
    loss = task(model, batch) + lam * scale * ramp(s) * sparsity_penalty(model, objective, target, reg_sigma, tau)
    ramp(s) = min(1, s / (lam_warmup * total))        (1 when lam_warmup = 0)
with (target, scale) = (controller.target_sparsity, controller.lam_scale) when a controller steers it, else
(Objective.target, 1). `Objective` is frozen and plain data (`to_dict`/`from_dict`), so it travels with a
checkpoint's meta (`gatecore.save_trainable(model, path, objective=obj.to_dict())`). A run without the
sparsity term passes objective=None.

Mixed precision: `autocast=torch.bfloat16` (or float16) runs the forward pass (task loss and sparsity term)
under torch.autocast on the model's device; parameters, gradients and optimizer state stay float32. On a CPU
with AMX a base-size encoder's step is 1.4-2.7x faster in bfloat16 (results/bench/autocast_*.json).
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Callable, Iterable

import torch

from .checks import check_real
from .methods import lam_ramp
from .penalty import KINDS, sparsity_penalty
from .sparsity_control import SparsityController, removed_got


@dataclass(frozen=True)
class Objective:
    """The sparsity side of the training loss (module docstring); `target` is the requested sparsity (1 - keep)
    when no controller steers it (None for l0)."""

    lam: float = 0.0
    objective: str = "params"  # the penalty kind: target | l0 | params (gatecore.sparsity_penalty)
    target: float | None = None
    lam_warmup: float = 0.0  # fraction of the steps over which lam ramps up from 0
    reg_sigma: float | None = None  # None: each gate's own
    kurtosis_tau: float | None = None  # None: off (target only)

    def __post_init__(self):
        if self.objective not in KINDS:
            raise ValueError(f"objective must be one of {KINDS}, got {self.objective!r}")
        check_real("lam", self.lam, low=0)
        check_real("lam_warmup", self.lam_warmup, low=0, high=1)
        if self.target is not None:
            check_real("target", self.target, low=0, high=1, high_open=True)
        for name in ("reg_sigma", "kurtosis_tau"):
            if getattr(self, name) is not None:
                check_real(name, getattr(self, name), low=0, low_open=True)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Objective:
        """From `to_dict`'s output; other keys (e.g. a note on where it came from) are ignored."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def as_trained(self, controller: SparsityController) -> Objective:
        """The objective a controlled run ends on, as a fixed one: ramp done, the controller's target and lam
        scale folded in (for l0 the knob multiplies lam). What a checkpoint should carry for the Hessian study."""
        return replace(self, lam=self.lam * controller.lam_scale, target=controller.target_sparsity, lam_warmup=0.0)

    def weight(self, step: int, total: int, scale: float = 1.0) -> float:
        """lam * scale * ramp(step): the penalty's factor at `step` of `total`."""
        return self.lam * scale * lam_ramp(step, total, self.lam_warmup)

    def penalty(self, model, controller: SparsityController | None = None) -> torch.Tensor:
        """The unweighted penalty, aimed at the controller's target when one steers it."""
        target = controller.target_sparsity if controller is not None else self.target
        kurt = {} if self.kurtosis_tau is None else {"kurtosis_tau": self.kurtosis_tau}
        return sparsity_penalty(model, self.objective, target=target, reg_sigma=self.reg_sigma, **kurt)

    def term(self, model, step: int = 0, total: int = 1, controller: SparsityController | None = None):
        """(weight * penalty, penalty) at `step` of `total`."""
        pen = self.penalty(model, controller)
        scale = controller.lam_scale if controller is not None else 1.0
        return self.weight(step, total, scale) * pen, pen


@dataclass
class StepOut:
    """What one step did: `step` counts it; `loss` is what was minimised (task + term), `task` and `penalty`
    the parts (tensors without graph; penalty None when no term)."""

    step: int
    loss: float
    task: torch.Tensor
    penalty: torch.Tensor | None


AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def check_autocast(dtype) -> None:
    """None (float32) or one of AUTOCAST_DTYPES' dtypes; raises ValueError otherwise."""
    if dtype is not None and dtype not in AUTOCAST_DTYPES.values():
        raise ValueError(f"autocast must be None or one of torch.{', torch.'.join(AUTOCAST_DTYPES)}, got {dtype!r}")


def forward_precision(model, dtype):
    """The context the forward pass runs in: torch.autocast(dtype) on the model's device, or nothing (None)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=dtype)


class NonFiniteLoss(FloatingPointError):
    """The loss of a step is NaN or infinite; raised before backward, so nothing was updated."""


def train_step(
    model,
    batch,
    loss_fn: Callable,
    optimizer,
    *,
    scheduler=None,
    objective: Objective | None = None,
    controller: SparsityController | None = None,
    control: bool = True,
    step: int = 0,
    total: int = 1,
    label: str = "training",
    autocast: torch.dtype | None = None,
) -> StepOut:
    """One step: loss = loss_fn(model, batch) + objective term (under `autocast`, module docstring); zero_grad,
    backward, optimizer and scheduler step; then, with `control`, the controller reads the eval-gate removed
    fraction. Raises NonFiniteLoss (naming `label` and the step) on a non-finite loss before anything is updated."""
    check_autocast(autocast)
    with forward_precision(model, autocast):
        task = loss_fn(model, batch)
        loss = task
        term, pen = objective.term(model, step, total, controller) if objective is not None else (None, None)
        if term is not None:
            loss = loss + term
    value = loss.item()
    if not math.isfinite(value):
        raise NonFiniteLoss(f"non-finite loss {value} at step {step + 1}/{total} of {label}")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    if controller is not None and control:
        controller.update(step + 1, total, removed_got(model))
    return StepOut(step + 1, value, task.detach(), None if pen is None else pen.detach())


@dataclass
class LoopEnd:
    steps: int  # steps taken
    diverged_at: int | None = None  # the step whose loss was non-finite (stop_on_nonfinite), else None


def train_loop(
    model,
    batches: Iterable,
    loss_fn: Callable,
    optimizer,
    *,
    scheduler=None,
    objective: Objective | None = None,
    controller: SparsityController | None = None,
    control: bool = True,
    total: int | None = None,
    start: int = 0,
    before: Callable | None = None,
    after: Callable | None = None,
    stop_on_nonfinite: bool = False,
    label: str = "training",
    autocast: torch.dtype | None = None,
) -> LoopEnd:
    """`train_step` over `batches` (any iterable, drawn lazily: one batch per step), steps counted from `start` of
    `total` (default: len(batches)) for the ramp and the controller.

    Hooks: `before(step)` runs before each forward (e.g. to set train/eval modes); `after(out: StepOut)` after
    each step (evaluation, logging); a true return value ends the loop. A non-finite loss raises NonFiniteLoss,
    or with `stop_on_nonfinite` ends the loop there (LoopEnd.diverged_at). `autocast`: as train_step's."""
    check_autocast(autocast)
    total = len(batches) if total is None else total
    step = start
    for batch in batches:
        if before is not None:
            before(step)
        try:
            out = train_step(
                model,
                batch,
                loss_fn,
                optimizer,
                scheduler=scheduler,
                objective=objective,
                controller=controller,
                control=control,
                step=step,
                total=total,
                label=label,
                autocast=autocast,
            )
        except NonFiniteLoss:
            if stop_on_nonfinite:
                return LoopEnd(step - start, diverged_at=step + 1)
            raise
        step = out.step
        if after is not None and after(out):
            break
    return LoopEnd(step - start)


def lbfgs_minimize(params, loss_fn: Callable, **options) -> torch.optim.LBFGS:
    """One L-BFGS `step(closure)` on loss_fn() (up to `max_iter` iterations; `options` go to torch.optim.LBFGS):
    the studies' deterministic fits (a head on fixed features, a stationary point, a reference minimum). Returns
    the optimizer, whose state says how many iterations ran."""
    opt = torch.optim.LBFGS(params, **options)

    def closure():
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    opt.step(closure)
    return opt
