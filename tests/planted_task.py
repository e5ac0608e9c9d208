"""A word-level task a tiny model can learn (label = 'good' in the text), shared by the training-loop tests."""

import random

from analysis.data import Split, Task
from analysis.finetune.encoding import encode

WORDS = ["good", "bad", "film", "plot", "dull", "fine", "acting", "long"]


def planted_task(n_train: int, n_dev: int, max_len: int):
    """(task, encoded train, encoded dev): 5-word texts drawn with seed 0, dev doubling as val; tiny vocab 64."""
    rng = random.Random(0)

    def split(n):
        t = [" ".join(rng.choice(WORDS) for _ in range(5)) for _ in range(n)]
        return Split([(x,) for x in t], [int("good" in x) for x in t])

    tr, dev = split(n_train), split(n_dev)
    return Task("planted", tr, dev, dev, "accuracy", 2), encode(None, tr, max_len, 64), encode(None, dev, max_len, 64)
