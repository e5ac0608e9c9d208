"""The Hessian study's short training run (`--train-steps`): AdamW on the adapters and the head, the gates with the
sparsity objective, before the spectrum of the trained state is taken (docs/design.md §4). The loop is
gatecore.train_loop's.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from gatecore import Gate
from gatecore.parameters import head_parameters, ids
from gatecore.train import Objective, train_loop


def train_short(
    model,
    loss_fn,
    batches,
    steps: int,
    lr_adapter: float,
    lr_head: float,
    objective: Objective | None = None,
    progress=True,
):
    """AdamW on adapters (+ head), the gates with `objective`'s term (no ramp: lam_warmup 0); train mode only on the
    gates (fresh noise). Returns the loss of every step."""
    head = ids(head_parameters(model))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if id(p) not in head], "lr": lr_adapter},
            {"params": [p for p in params if id(p) in head], "lr": lr_head},
        ],
        weight_decay=0.0,
    )
    gates = [m for m in model.modules() if isinstance(m, Gate)]
    for g in gates:
        g.train()
    losses = []
    bar = tqdm(total=steps, desc="short training", disable=not progress, leave=False)
    train_loop(
        model,
        (batches[step % len(batches)] for step in range(steps)),
        loss_fn,
        opt,
        objective=objective if gates else None,
        total=steps,
        after=lambda out: losses.append(out.loss) or bar.update(1),
        label="short training",
    )
    bar.close()
    model.eval()
    return losses
