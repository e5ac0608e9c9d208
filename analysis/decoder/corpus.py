"""The offline text corpus of the task-agnostic study: Wikipedia and news sentences from the GLUE files in data/glue/.

    Wikipedia: the `sentence` column of QNLI dev (from SQuAD v1.1, CC BY-SA 4.0), each distinct sentence once
    news:      both sentences of every MRPC pair, train and dev (Dolan & Brockett 2005, Microsoft's licence terms)

Provenance, checksums and licences: data/glue/README.md. The split is by a hash of the text (QNLI) or of the
pair (MRPC), so the two paraphrases of a pair never land on both sides: `heldout` is ~10% of each source,
`train` the rest (training text and the pruning baselines' calibration text alike).
"""

from __future__ import annotations

import hashlib

import torch

from analysis.data import read_glue

HELDOUT_PERCENT = 10


def _bucket(key: str) -> int:
    return int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % 100


def _items() -> list[tuple[str, list[str]]]:
    """(split key, sentences) per QNLI sentence and per MRPC pair, in file order."""
    items, seen = [], set()
    for _, sentence in read_glue("qnli", "dev").texts:
        if sentence not in seen:
            items.append((sentence, [sentence]))
        seen.add(sentence)
    for part in ("train", "dev"):
        items += [(s1 + "\t" + s2, [s1, s2]) for s1, s2 in read_glue("mrpc", part).texts]
    return items


def corpus_texts(split: str) -> list[str]:
    """Distinct sentences of `split` ('train' or 'heldout'), in file order: QNLI sentences, then MRPC pairs.

    A sentence that also occurs in a held-out item (MRPC reuses sentences across pairs) is held out only.
    """
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    items = _items()
    held = list(dict.fromkeys(s for key, ss in items if _bucket(key) < HELDOUT_PERCENT for s in ss))
    if split == "heldout":
        return held
    held_set = set(held)
    return list(
        dict.fromkeys(s for key, ss in items if _bucket(key) >= HELDOUT_PERCENT for s in ss if s not in held_set)
    )


def token_chunks(tokenizer, texts: list[str], length: int, max_chunks: int | None = None) -> torch.Tensor:
    """(n, length) token ids: the texts tokenized one by one, joined by a newline token, cut into full chunks."""
    sep = tokenizer.encode("\n", add_special_tokens=False)
    need = None if max_chunks is None else max_chunks * length
    stream: list[int] = []
    for t in texts:
        stream += tokenizer.encode(t, add_special_tokens=False) + sep
        if need is not None and len(stream) >= need:
            break
    n = len(stream) // length if max_chunks is None else min(max_chunks, len(stream) // length)
    if n == 0:
        raise ValueError(f"the texts give {len(stream)} tokens, fewer than one chunk of {length}")
    return torch.tensor(stream[: n * length]).view(n, length)
