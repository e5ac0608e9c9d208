"""The sentence classifier the studies train and analyse: pooled encoder output -> the model's own head.

    mean:  logits = classifier(dropout(sum_t m_t h_t / max(1, sum_t m_t)))    (h: last hidden state, m: attention mask)
    cls:   logits = model(**batch).logits                                    (the stock [CLS] pooler path)

all-MiniLM-L6-v2 was trained as a mean-pooled sentence encoder, so "mean" is what it was trained for
(docs/design.md §6). Either way the model stays a `*ForSequenceClassification`, so `gatecore.compress`
applies to it.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

POOLINGS = ("mean", "cls")


def pooled_logits(model: nn.Module, batch: dict, pooling: str) -> torch.Tensor:
    """Logits of `batch` (model inputs, no labels) through the `pooling` ('mean' or 'cls') classifier."""
    if pooling == "cls":
        return model(**batch).logits
    if pooling != "mean":
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Linear):
        raise ValueError(f"mean pooling needs a linear `classifier` head (BERT-like); {type(model).__name__} "
                         "has none: use pooling='cls'")
    h = getattr(model, model.base_model_prefix)(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
    pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
    return head(getattr(model, "dropout", nn.Identity())(pooled))


def pooled_loss(pooling: str) -> Callable[[nn.Module, dict], torch.Tensor]:
    """loss_fn(model, batch) for a batch with 'labels': mean cross-entropy of the pooled logits, or MSE for
    one output (regression, e.g. STS-B), in the logits' dtype (float64 stays float64 for Hessians)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")

    def loss_fn(model, batch):
        logits = pooled_logits(model, {k: v for k, v in batch.items() if k != "labels"}, pooling)
        y = batch["labels"]
        return F.mse_loss(logits.squeeze(-1), y.to(logits.dtype)) if logits.shape[-1] == 1 else F.cross_entropy(logits, y)
    return loss_fn
