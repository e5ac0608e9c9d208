"""Perplexity of a causal LM on fixed token chunks (docs/decoder.md).

    NLL = -(1/N) sum_chunks sum_{t=1}^{L-1} log p(x_t | x_<t),   N = n_chunks * (L - 1),   ppl = exp(NLL)

Every chunk is scored on its own (no context carried across chunks); eval mode, so gates are deterministic.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def perplexity(model, chunks: torch.Tensor, batch: int = 8) -> dict:
    """{"ppl", "nll", "tokens"} of `model` on (n, L) token ids, in batches of `batch` chunks."""
    if chunks.dim() != 2 or chunks.shape[1] < 2:
        raise ValueError(f"chunks must be (n, L) token ids with L >= 2, got shape {tuple(chunks.shape)}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    try:
        for i in range(0, len(chunks), batch):
            ids = chunks[i : i + batch].to(device)
            logits = model(input_ids=ids).logits[:, :-1]
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # half models: float32
            total += F.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum"
            ).item()
            count += ids[:, 1:].numel()
    finally:
        model.train(was_training)
    nll = total / count
    return {"ppl": math.exp(nll), "nll": nll, "tokens": count}
