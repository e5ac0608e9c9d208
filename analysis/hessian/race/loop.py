"""The race's optimizer loop (gatecore.train_loop): AdamW with a linear warm-up on the adapters (and the head when
it trains), the gates with fresh noise each forward, the eval loss every few steps."""

from __future__ import annotations

import math
import time

import torch

from gatecore import Gate
from gatecore.parameters import head_parameters, ids
from gatecore.train import train_loop


@torch.no_grad()
def eval_loss(model, batches, loss_fn) -> float:
    """Mean loss over the examples, deterministic forward (model.eval(): eval gates, no dropout)."""
    model.eval()
    tot = sum(loss_fn(model, b).item() * len(b["labels"]) for b in batches)
    return tot / sum(len(b["labels"]) for b in batches)


def gates_train(model) -> None:
    """The method's training forward: gates draw fresh noise, the rest of the model in eval mode (no dropout)."""
    model.eval()
    for m in model.modules():
        if isinstance(m, Gate):
            m.train()


def race(
    model, batches, eval_set, loss_fn, *, lr: float, head_lr: float | None, warmup: int, eval_every: int, seed: int
) -> dict:
    """AdamW on the adapters (+ the head when head_lr is not None; otherwise it is frozen) over `batches`, one step
    each; returns the eval-loss curve (steps, loss), the training losses and whether it diverged."""
    head = ids(head_parameters(model))
    for p in head_parameters(model):
        p.requires_grad_(head_lr is not None)
    adapter = [p for p in model.parameters() if p.requires_grad and id(p) not in head]
    groups = [{"params": adapter, "lr": lr}] + (
        [{"params": head_parameters(model), "lr": head_lr}] if head_lr is not None else []
    )
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.999), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    torch.manual_seed(seed)  # the gates' noise stream
    steps, losses, train = [0], [eval_loss(model, eval_set, loss_fn)], []
    diverged = None
    t = time.perf_counter()

    def after(out) -> bool:
        nonlocal diverged
        train.append(out.loss)
        if out.step % eval_every == 0 or out.step == len(batches):
            steps.append(out.step)
            losses.append(eval_loss(model, eval_set, loss_fn))
            if not math.isfinite(losses[-1]):
                diverged = out.step
                return True
        return False

    end = train_loop(
        model,
        batches,
        loss_fn,
        opt,
        scheduler=sched,
        before=lambda step: gates_train(model),
        after=after,
        stop_on_nonfinite=True,
        label="race",
    )
    diverged = end.diverged_at or diverged
    model.eval()
    return {
        "steps": steps,
        "eval_loss": [x if math.isfinite(x) else None for x in losses],
        "train_loss": train,
        "diverged_at": diverged,
        "wall_s": time.perf_counter() - t,
    }
