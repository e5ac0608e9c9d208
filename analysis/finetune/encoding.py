"""Examples as token ids, their batches, the task loss and evaluation: what a finetuning run and the benches share
(analysis/finetune/train.py trains with them).

Tiny models have no tokenizer: `encode` hashes words into their vocab. Batches are padded to their longest example.
"""

from __future__ import annotations

import random
import zlib
from dataclasses import dataclass

import torch
from torch.nn.functional import cross_entropy, mse_loss

from analysis.data import Split, Task
from gatecore.pooling import pooled_logits


@dataclass
class Encoded:
    ids: list[list[int]]
    labels: list


def encode(tok, split: Split, max_len: int, vocab_size: int = 64) -> Encoded:
    """Token ids per example; without a tokenizer (tiny models) hash words into the tiny vocab."""
    if tok is None:
        ids = [
            [3 + zlib.crc32(w.encode()) % (vocab_size - 3) for t in texts for w in t.split()][:max_len] or [3]
            for texts in split.texts
        ]
        return Encoded(ids, list(split.labels))
    cols = list(zip(*split.texts))
    enc = tok(*[list(c) for c in cols[:2]], truncation=True, max_length=max_len)
    return Encoded(enc["input_ids"], list(split.labels))


def collate(enc: Encoded, idx, pad_id: int, device):
    """(padded inputs, labels) of the examples `idx`, padded to the longest of them."""
    n = max(len(enc.ids[j]) for j in idx)
    ids = torch.full((len(idx), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(idx), n), dtype=torch.long)
    for r, j in enumerate(idx):
        ids[r, : len(enc.ids[j])] = torch.tensor(enc.ids[j])
        mask[r, : len(enc.ids[j])] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}, [enc.labels[j] for j in idx]


def batches(enc: Encoded, batch_size: int, order, pad_id: int, device):
    for i in range(0, len(order), batch_size):
        yield collate(enc, order[i : i + batch_size], pad_id, device)


def subset(enc: Encoded, n: int | None, seed: int = 0) -> Encoded:
    """A fixed-seed subset of n examples (all of them when n is None or larger)."""
    if n is None or n >= len(enc.ids):
        return enc
    idx = sorted(random.Random(seed).sample(range(len(enc.ids)), n))
    return Encoded([enc.ids[j] for j in idx], [enc.labels[j] for j in idx])


def task_loss_fn(pooling: str, num_labels: int):
    """loss_fn(model, (inputs, labels)) for gatecore.train_loop: the task loss of the pooled logits."""
    return lambda model, batch: task_loss(pooled_logits(model, batch[0], pooling), batch[1], num_labels)


def task_loss(logits, labels, num_labels: int):
    if num_labels == 1:
        return mse_loss(logits.squeeze(-1).float(), torch.tensor(labels, dtype=torch.float, device=logits.device))
    return cross_entropy(logits.float(), torch.tensor(labels, dtype=torch.long, device=logits.device))


@torch.no_grad()
def predict(model, enc: Encoded, pooling: str, num_labels: int, pad_id: int, device, batch_size: int = 64):
    was = model.training
    model.eval()
    order = sorted(range(len(enc.ids)), key=lambda j: len(enc.ids[j]))  # length-sorted: little padding
    preds = [None] * len(order)
    for (batch, _), start in zip(batches(enc, batch_size, order, pad_id, device), range(0, len(order), batch_size)):
        out = pooled_logits(model, batch, pooling).float()
        vals = out.squeeze(-1).tolist() if num_labels == 1 else out.argmax(-1).tolist()
        for j, v in zip(order[start : start + batch_size], vals):
            preds[j] = v
    model.train(was)
    return preds


def evaluate(model, enc: Encoded, task: Task, pooling: str, pad_id: int, device) -> dict:
    return task.score(predict(model, enc, pooling, task.num_labels, pad_id, device), enc.labels)
