"""Training batches: random, or length-bucketed (docs/design.md §7: step cost ~ tokens per batch).

    random_batches(n, batch_size, rng)                  shuffle, cut into batches
    bucketed_batches(lengths, batch_size, rng, pool)    shuffle; sort each pool of `pool` batches by length;
                                                        cut each pool into batches; shuffle the batch order

Contract of both: every index 0..n-1 appears exactly once per epoch, no batch holds more than
`batch_size` indices, and the result is a function of the rng's state alone (same seed, same batches).
Bucketing keeps the batches random in composition (pools are drawn at random) and in order (the batch
order is shuffled), but each batch holds examples of similar length, so little of it is padding: on
SST-2 random batches carry ~3x their real tokens (docs/design.md §7), bucketed ones close to 1x.
"""

from __future__ import annotations

import random

POOL = 50  # batches per sorting pool: large enough to find similar lengths, small enough to stay random


def random_batches(n: int, batch_size: int, rng: random.Random) -> list[list[int]]:
    order = list(range(n))
    rng.shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n, batch_size)]


def bucketed_batches(lengths, batch_size: int, rng: random.Random, pool: int = POOL) -> list[list[int]]:
    """Batches of indices into `lengths`; see the module docstring."""
    if batch_size < 1 or pool < 1:
        raise ValueError(f"batch_size and pool must be >= 1, got {batch_size}, {pool}")
    order = list(range(len(lengths)))
    rng.shuffle(order)
    out, size = [], batch_size * pool
    for start in range(0, len(order), size):
        chunk = sorted(order[start : start + size], key=lambda j: lengths[j])  # stable: ties keep the shuffle
        out += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(out)
    return out


def epoch_batches(lengths, batch_size: int, rng: random.Random, bucketed: bool, pool: int = POOL) -> list[list[int]]:
    return (
        bucketed_batches(lengths, batch_size, rng, pool) if bucketed else random_batches(len(lengths), batch_size, rng)
    )


def padding_ratio(lengths, batches) -> float:
    """Tokens the batches carry (rows x longest row) over the real tokens."""
    padded = sum(len(b) * max(lengths[j] for j in b) for b in batches)
    return padded / sum(lengths[j] for b in batches for j in b)
