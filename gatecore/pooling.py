"""The sentence classifier the studies train and analyse: pooled encoder output -> the model's own head.

    mean:  p = sum_t m_t h_t / max(1, sum_t m_t)           (h: last hidden state, m: attention mask)
           linear head (BERT):               logits = classifier(dropout(p))
           two-layer head (RoBERTa, MPNet):  logits = classifier([p])  = out_proj(tanh(dense(p)))  (dropout in train)
    cls:   logits = model(**batch).logits                  (the stock first-token path: BERT's [CLS] pooler,
                                                            the two-layer head on <s>)

A two-layer head (`classifier.dense`, `classifier.out_proj`) reads the first position of the sequence it
is given; it is given the one-position sequence [p], so it classifies the mean-pooled vector with its own
layers. all-MiniLM-L6-v2 and all-mpnet-base-v2 were both trained as mean-pooled sentence encoders (their
sentence-transformers configs: `pooling_mode_mean_tokens`), so "mean" is what they were trained for
(docs/design.md §6). Either way the model stays a `*ForSequenceClassification`, so `gatecore.compress`
applies to it.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

POOLINGS = ("mean", "cls")


def is_two_layer_head(head) -> bool:
    """The RoBERTa/MPNet classification head: dense -> tanh -> out_proj on the first position."""
    return isinstance(head, nn.Module) and all(
        isinstance(getattr(head, n, None), nn.Module) for n in ("dense", "out_proj")
    )


def pooled_logits(model: nn.Module, batch: dict, pooling: str) -> torch.Tensor:
    """Logits of `batch` (model inputs, no labels) through the `pooling` ('mean' or 'cls') classifier."""
    if pooling == "cls":
        return model(**batch).logits
    if pooling != "mean":
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
    head = getattr(model, "classifier", None)
    linear = isinstance(head, nn.Linear)
    if not (linear or is_two_layer_head(head)):
        raise ValueError(
            f"mean pooling needs a `classifier` head that is linear (BERT-like) or dense -> out_proj "
            f"(RoBERTa, MPNet); {type(model).__name__} has none: use pooling='cls'"
        )
    h = getattr(model, model.base_model_prefix)(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
    pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
    if linear:
        return head(getattr(model, "dropout", nn.Identity())(pooled))
    return head(pooled.unsqueeze(1))  # a one-position sequence: the head reads position 0


def pooled_loss(pooling: str) -> Callable[[nn.Module, dict], torch.Tensor]:
    """loss_fn(model, batch) for a batch with 'labels': mean cross-entropy of the pooled logits, or MSE for
    one output (regression, e.g. STS-B), in the logits' dtype (float64 stays float64 for Hessians)."""
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")

    def loss_fn(model, batch):
        logits = pooled_logits(model, {k: v for k, v in batch.items() if k != "labels"}, pooling)
        y = batch["labels"]
        return (
            F.mse_loss(logits.squeeze(-1), y.to(logits.dtype)) if logits.shape[-1] == 1 else F.cross_entropy(logits, y)
        )

    return loss_fn
