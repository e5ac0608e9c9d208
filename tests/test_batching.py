"""analysis.finetune.batching: bucketed batches cover every example once per epoch, reproducibly, and pad little."""

import random

import pytest

from analysis.finetune.batching import bucketed_batches, epoch_batches, padding_ratio, random_batches


def skewed_lengths(n=1000, seed=0):
    rng = random.Random(seed)
    return [max(1, int(rng.expovariate(1 / 15))) + 2 for _ in range(n)]  # long-tailed, like SST-2 sentences


@pytest.mark.parametrize("n,batch_size,pool", [(1000, 32, 50), (1000, 32, 3), (97, 10, 4), (5, 32, 50), (1, 1, 1)])
def test_every_example_once_per_epoch_and_no_batch_over_the_size(n, batch_size, pool):
    lengths = skewed_lengths(n)
    rng = random.Random(1)
    for _ in range(2):  # two epochs from one rng: each a permutation, and they differ
        b = bucketed_batches(lengths, batch_size, rng, pool)
        flat = [j for batch in b for j in batch]
        assert sorted(flat) == list(range(n))
        assert max(len(batch) for batch in b) <= batch_size and min(len(batch) for batch in b) >= 1


def test_order_is_a_function_of_the_seed():
    lengths = skewed_lengths()
    assert bucketed_batches(lengths, 32, random.Random(7)) == bucketed_batches(lengths, 32, random.Random(7))
    assert bucketed_batches(lengths, 32, random.Random(7)) != bucketed_batches(lengths, 32, random.Random(8))
    rng = random.Random(7)
    e1, e2 = bucketed_batches(lengths, 32, rng), bucketed_batches(lengths, 32, rng)
    assert e1 != e2  # a new shuffle every epoch


def test_bucketing_cuts_padding_and_keeps_batch_order_random():
    lengths = skewed_lengths(3200)
    rnd = padding_ratio(lengths, random_batches(len(lengths), 32, random.Random(0)))
    buck_batches = bucketed_batches(lengths, 32, random.Random(0))
    buck = padding_ratio(lengths, buck_batches)
    assert rnd > 2.0 and buck < 1.15
    longest = [max(lengths[j] for j in b) for b in buck_batches]
    assert longest != sorted(longest) and longest != sorted(longest, reverse=True)  # not a length curriculum


def test_random_batches_are_the_legacy_order():
    """bucketed=False reproduces the runner's old batches: shuffle with the run's rng, then cut."""
    rng, legacy = random.Random(3), list(range(50))
    random.Random(3).shuffle(legacy)
    assert [j for b in epoch_batches([1] * 50, 8, rng, bucketed=False) for j in b] == legacy
    with pytest.raises(ValueError):
        bucketed_batches([1, 2], 0, random.Random(0))
