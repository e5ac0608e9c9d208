"""The Hessian study's short training run (`--train-steps`): AdamW on the adapters and the head, the gates with the
sparsity penalty, before the spectrum of the trained state is taken (docs/design.md §4).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from gatecore import Gate
from gatecore.parameters import head_parameters, ids


def train_short(model, loss_fn, batches, steps: int, lr_adapter: float, lr_head: float, penalty=None, progress=True):
    """AdamW on adapters (+ head), the gates with `penalty`; train mode only on the gates (fresh noise)."""
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
    for step in tqdm(range(steps), desc="short training", disable=not progress, leave=False):
        loss = loss_fn(model, batches[step % len(batches)])
        if gates and penalty is not None:
            loss = loss + penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses
