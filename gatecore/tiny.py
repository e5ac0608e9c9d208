"""Tiny randomly initialised models for tests and smoke runs (no download)."""

from __future__ import annotations

import torch

TINY_KINDS = ("bert", "roberta", "llama")  # the kinds the shared test fixture runs every architecture test on
MORE_KINDS = ("mpnet",)  # tested in their own files (tests/test_mpnet.py)


TINY_SIZES = dict(
    vocab_size=64,
    hidden_size=16,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=32,
    max_position_embeddings=64,
    pad_token_id=1,
    initializer_range=0.2,
)  # large init: outputs of order 1, so differences show


def tiny_config(kind: str, **overrides):
    from transformers import BertConfig, LlamaConfig, MPNetConfig, RobertaConfig

    if kind == "bert":
        cfg = BertConfig(**TINY_SIZES, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    elif kind == "roberta":
        cfg = RobertaConfig(**TINY_SIZES, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    elif kind == "llama":
        cfg = LlamaConfig(**TINY_SIZES, num_key_value_heads=2, rms_norm_eps=1e-6)
    elif kind == "mpnet":
        cfg = MPNetConfig(**TINY_SIZES, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    else:
        raise ValueError(f"kind must be one of {TINY_KINDS + MORE_KINDS}, got {kind!r}")
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


def tiny_model(kind: str = "bert", num_labels: int = 2, seed: int = 0, dtype=torch.float32, **overrides):
    """A `*ForSequenceClassification` with hidden 16, 2 layers, 4 heads, eval mode."""
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    cfg = tiny_config(kind, num_labels=num_labels, **overrides)
    model = AutoModelForSequenceClassification.from_config(cfg, attn_implementation="eager")
    return model.to(dtype).eval()


def tiny_batch(model, batch: int = 3, seq: int = 7, seed: int = 0) -> dict:
    """Random token ids (no pad token) and a full attention mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
