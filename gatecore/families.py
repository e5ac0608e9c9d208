"""The one model-family registry: which `model_type`s gatecore knows, how to gate them, where their
layers are, and which of them `compress` rebuilds (docs/design.md §3 and §5).

Three families of transformer blocks:

    bert    encoder.layer[i]: attention.self.{query,key,value}, attention.output.dense,
            intermediate.dense (up), output.dense (down)
    mpnet   encoder.layer[i]: attention.attn.{q,k,v,o}, intermediate.dense, output.dense; one relative-position
            bias per head, computed once by the encoder and shared by every layer (compress_mpnet.py)
    llama   layers[i]: self_attn.{q,k,v,o}_proj (RoPE, grouped KV heads), mlp.{gate,up,down}_proj

`add_gates` / `add_lora` use the presets of every type listed here; `compress`, `size_report`,
`random_gate_pattern` and `load_compressed` accept a type only if it is also compressible: a listed
type that is not says why in `NOT_COMPRESSIBLE` (checked before anything changes).
"""

from __future__ import annotations

from torch import nn

BERT_LIKE = ("bert", "roberta", "xlm-roberta", "camembert", "electra", "ernie")
MPNET_LIKE = ("mpnet",)
LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "phi3", "olmo", "olmo2")

# the types whose blocks follow the family layout above but that compress cannot rebuild exactly
NOT_COMPRESSIBLE = {
    "qwen3": "per-head q/k norms",
    "olmo2": "q/k norms over the whole projection",
    "gemma2": "softmax scale from query_pre_attn_scalar and attention logit soft-capping",
    "phi3": "fused qkv_proj and gate_up_proj",
}

_BERT_GATES = [
    r"attention\.self\.(query|key|value)",
    r"attention\.output\.dense",
    r"layer\.\d+\.intermediate\.dense",
    r"layer\.\d+\.output\.dense",
]
_MPNET_GATES = [r"attention\.attn\.(q|k|v|o)", r"layer\.\d+\.intermediate\.dense", r"layer\.\d+\.output\.dense"]
_LLAMA_GATES = [r"self_attn\.(q|k|v|o)_proj", r"mlp\.(gate|up|down)_proj"]
_PHI3_GATES = [r"self_attn\.(qkv|o)_proj", r"mlp\.(gate_up|down)_proj"]  # phi3 fuses q, k, v and gate, up

# every attention and FFN matrix (gates); q and v, the common LoRA setting (docs/design.md §2)
GATE_PRESETS = {
    **{t: _BERT_GATES for t in BERT_LIKE},
    **{t: _MPNET_GATES for t in MPNET_LIKE},
    **{t: _LLAMA_GATES for t in LLAMA_LIKE},
    "phi3": _PHI3_GATES,
}
LORA_PRESETS = {
    **{t: [r"attention\.self\.(query|value)"] for t in BERT_LIKE},
    **{t: [r"attention\.attn\.(q|v)"] for t in MPNET_LIKE},
    **{t: [r"self_attn\.(q|v)_proj"] for t in LLAMA_LIKE},
    "phi3": [r"self_attn\.qkv_proj"],
}

# per family, the paths inside one block of: the attention module, q, k, v, o (gates and compress agree on them)
ATTENTION = {
    "bert": (
        "attention.self",
        "attention.self.query",
        "attention.self.key",
        "attention.self.value",
        "attention.output.dense",
    ),
    "mpnet": ("attention.attn", "attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o"),
    "llama": ("self_attn", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
}

HEAD_NAMES = ("classifier", "score", "qa_outputs", "lm_head", "cls", "head")


def model_type(model: nn.Module) -> str | None:
    """`model.config.model_type`, or None for a model without a Hugging Face config."""
    return getattr(getattr(model, "config", None), "model_type", None)


def gate_targets(model: nn.Module) -> list[str]:
    """The preset gate targets of the model's type (every attention and FFN matrix)."""
    return _preset(model, GATE_PRESETS, "gate")


def lora_targets(model: nn.Module) -> list[str]:
    """The preset LoRA targets of the model's type (q and v)."""
    return _preset(model, LORA_PRESETS, "LoRA")


def _preset(model: nn.Module, presets: dict, what: str) -> list[str]:
    mtype = model_type(model)
    if mtype not in presets:
        raise ValueError(
            f"no default {what} targets for model_type={mtype!r}; presets exist for "
            f"{sorted(presets)}. Pass targets=[...] (name patterns) to use any model."
        )
    return presets[mtype]


def compressible_types() -> tuple[str, ...]:
    return tuple(t for t in BERT_LIKE + MPNET_LIKE + LLAMA_LIKE if t not in NOT_COMPRESSIBLE)


def family(model: nn.Module) -> str:
    """'bert', 'mpnet' or 'llama' for a type compress can rebuild; ValueError (saying why) for any other."""
    mtype = model_type(model)
    if mtype in NOT_COMPRESSIBLE:
        raise ValueError(
            f"compress does not support model_type={mtype!r} ({NOT_COMPRESSIBLE[mtype]}); "
            f"it supports {compressible_types()}"
        )
    if mtype in BERT_LIKE:
        return "bert"
    if mtype in MPNET_LIKE:
        return "mpnet"
    if mtype in LLAMA_LIKE:
        return "llama"
    raise ValueError(f"compress supports model_type in {compressible_types()}, got {mtype!r}")


def encoder_layers(model: nn.Module):
    """The transformer blocks of a BERT-like or MPNet (encoder.layer) or LLaMA-like (layers) model."""
    base = model.base_model
    return base.layers if family(model) == "llama" else base.encoder.layer


def attention_parts(layer: nn.Module, kind: str) -> tuple[nn.Module, ...]:
    """(attention module, q, k, v, o) of one block of family `kind` (gated or plain linears)."""
    return tuple(layer.get_submodule(path) for path in ATTENTION[kind])


def find_head(model: nn.Module) -> tuple[str, nn.Module] | None:
    """The task head: the first of `HEAD_NAMES` that is a direct child of the model."""
    for name in HEAD_NAMES:
        mod = getattr(model, name, None)
        if isinstance(mod, nn.Module):
            return name, mod
    return None
