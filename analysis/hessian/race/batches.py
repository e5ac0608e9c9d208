"""The race's batches: the same training batches for every method of a seed, a fixed evaluation set, a fingerprint."""

from __future__ import annotations

import hashlib
import math

import numpy as np

from ..setup import encode


def batch_order(n: int, steps: int, batch: int, seed: int) -> list[np.ndarray]:
    """Example indices of each step: a fresh permutation of the n examples per epoch (rng seeded with `seed`)."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(n) for _ in range(math.ceil(steps * batch / n))])
    return [order[i * batch : (i + 1) * batch] for i in range(steps)]


def make_batches(tok, texts, labels, steps: int, batch: int, seed: int, max_length: int) -> list[dict]:
    """The `steps` training batches of `seed`: the same for every method (they depend on the data and seed only)."""
    out = []
    for idx in batch_order(len(labels), steps, batch, seed):
        out += encode(tok, [texts[i] for i in idx], [labels[i] for i in idx], batch, max_length)
    return out


def eval_batches(tok, texts, labels, max_length: int, batch: int = 64) -> list[dict]:
    """The evaluation set in batches of similar length (less padding; the mean loss does not depend on the order)."""
    lengths = [len(tok(*t, truncation=True, max_length=max_length)["input_ids"]) for t in texts]
    idx = np.argsort(lengths, kind="stable")
    return encode(tok, [texts[i] for i in idx], [labels[i] for i in idx], batch, max_length)


def digest(batches: list[dict]) -> str:
    """A fingerprint of the batches' token ids and labels, in order (to check that both methods saw the same)."""
    h = hashlib.sha1()
    for b in batches:
        h.update(b["input_ids"].numpy().tobytes())
        h.update(b["labels"].numpy().tobytes())
    return h.hexdigest()[:16]
