"""Physical compression: a gated model becomes a smaller model of the same class (docs/design.md §3).

    compress(model)                    # in place; returns the model, e.g. a smaller BertForSequenceClassification
    compress(model, layout="hidden")   # also drop the hidden-width columns/rows the gates closed (compress_hidden.py)

Every gate is first folded into the weights, `W' = diag(z_r) W diag(z_c)`, `b' = z_r * b`
(fractional gates, residual-stream gates, LoRA updates). Then, per transformer layer,
every unit whose contribution is exactly zero is dropped:

- FFN neuron: down column zero, or up row zero (LLaMA: gate row zero too, act(0) = 0).
  A neuron whose input weights are all zero but whose bias is not outputs a constant
  act(b) (LLaMA: act(b_gate) * b_up); that constant times its down column is added to the
  down bias, then the neuron is dropped. Exact for any activation.
- value/output dim: value row zero or output column zero; a head goes when all of them do.
- query/key dim: query row zero or key row zero (LLaMA: per RoPE pair (j, j + d/2), a pair
  goes when both of its query rows or both of its key rows are zero).

Uniform head rule (the attention kernels view q, k and v with one head size per layer):
per layer every kept head keeps d' = max over kept heads of max(#live query/key dims,
#live value dims) dims for q, k and v alike; a head with fewer live dims is padded with
some of its own dead dims, whose folded weights are exactly zero, so padding never
changes the output. LLaMA shares cos/sin across the heads of a layer, so the kept RoPE
pairs are the union over heads; with grouped KV heads each kept KV group keeps the same
number of query heads (padded the same way). The cost of the rule is recorded per layer
as `padding_weights` (weight entries kept only for uniformity) in
`model.config.gatecore_layers`, and reported by `size_report`.

The softmax scale stays 1/sqrt(original head dim): the modules compute d'^-0.5, as
transformers does from its config, and the query rows carry the factor sqrt(d'/d). LLaMA
layers with fewer RoPE pairs gather their cos/sin with a forward pre-hook
(`gatecore_rope_dims`, indices into the full rotary dimension). The residual (hidden)
width is never changed. Every layer keeps at least one head and one neuron.

Layouts: "inner" (the default) stops here, residual-stream gates folded into zero columns/rows;
"hidden" then drops those columns/rows by per-layer gathers and scatters (compress_hidden.py).
"""

from __future__ import annotations

from dataclasses import asdict

import torch
from torch import nn

from .accounting import check_finite_gates
from .compress_bert import compress_bert_layer
from .compress_hidden import InputGather, OutputScatter, apply_hidden_layout, check_layout
from .compress_llama import compress_llama_layer
from .compress_mpnet import compress_mpnet_layer
from .families import encoder_layers, family
from .fold import LayerSizes, fold, make_linear
from .gates import GatedLinear
from .inject import merge_lora, set_module

LAYER_COMPRESSORS = {"bert": compress_bert_layer, "mpnet": compress_mpnet_layer, "llama": compress_llama_layer}


def _fold_leftover_gates(model: nn.Module) -> None:
    """Gates outside the known layer structure (e.g. on a head) fold into a same-shape Linear."""
    for name, mod in [(n, m) for n, m in model.named_modules() if isinstance(m, GatedLinear)]:
        set_module(model, name, make_linear(fold(mod)))


def _update_config(model: nn.Module, kind: str, sizes: list[LayerSizes], layout: str) -> None:
    """Per-layer sizes go to config.gatecore_layers; the global fields only where they describe every layer."""
    cfg = model.config
    first = sizes[0]
    same = all(
        (s.heads, s.kv_heads, s.head_dim, s.intermediate, s.rope_dims)
        == (first.heads, first.kv_heads, first.head_dim, first.intermediate, first.rope_dims)
        for s in sizes
    )
    if all(s.intermediate == first.intermediate for s in sizes):
        cfg.intermediate_size = first.intermediate
    if kind != "llama":  # bert, mpnet
        full_attention = all(
            s.heads == cfg.num_attention_heads and s.head_dim * s.heads == cfg.hidden_size for s in sizes
        )
        loadable = same and full_attention
    else:
        loadable = same and first.rope_dims is None and first.head_dim == getattr(cfg, "head_dim", first.head_dim)
        if loadable:
            cfg.head_dim = first.head_dim  # explicit, so changing the head count keeps it
            cfg.num_attention_heads, cfg.num_key_value_heads = first.heads, first.kv_heads
    cfg.gatecore_compressed = True
    cfg.gatecore_layout = layout
    cfg.gatecore_uniform = bool(loadable) and not _has_hidden_wrappers(model)  # True: plain from_pretrained works
    cfg.gatecore_layers = [asdict(s) for s in sizes]


def _has_hidden_wrappers(model: nn.Module) -> bool:
    return any(isinstance(m, (InputGather, OutputScatter)) for m in model.modules())


@torch.no_grad()
def compress(model: nn.Module, layout: str = "inner") -> nn.Module:
    """Remove every structure the eval gates allow, in place; returns the same (now smaller) model.

    The result has no gates, the same class, smaller nn.Linear shapes, and outputs equal to the
    gated model's eval outputs (up to rounding). It is returned in **eval mode**, whatever the
    mode before: it is built from the eval gates, and is an inference model (as `load_compressed`
    returns it); call `.train()` to finetune it further. A model compressed before, with no gates
    added since, is returned unchanged (or, asked for layout="hidden", converted to it); a model that was
    never gated is an error, and so are NaN/inf gate parameters (checked, like the model type and the
    layout, before anything changes).

    layout: "inner" drops heads, head dims and FFN neurons; "hidden" also the hidden-width columns of
    the layers reading the residual stream and the rows of those writing it (compress_hidden.py). A
    hidden-layout model cannot be gated again (its readers and writers are no longer nn.Linear).
    """
    cfg = getattr(model, "config", None)
    if not any(isinstance(m, GatedLinear) for m in model.modules()):
        if getattr(cfg, "gatecore_compressed", False):
            check_layout(model, layout)
            if layout == "hidden" and apply_hidden_layout(model):
                cfg.gatecore_layout, cfg.gatecore_uniform = "hidden", False
            return model
        raise ValueError(
            "compress needs a gated model (gatecore.add_gates) with some gates closed; "
            "this model has no GatedLinear layers"
        )
    kind = family(model)
    check_layout(model, layout)
    if _has_hidden_wrappers(model):
        raise ValueError(
            "this model was compressed in the hidden layout, whose gathered/scattered layers cannot "
            "be compressed again; compress the gated model, or gate an inner-layout compressed model"
        )
    check_finite_gates(model)
    merge_lora(model)
    sizes = [LAYER_COMPRESSORS[kind](layer) for layer in encoder_layers(model)]
    _fold_leftover_gates(model)
    if layout == "hidden":
        apply_hidden_layout(model)
    _update_config(model, kind, sizes, layout)
    return model.eval()


def layer_sizes(model: nn.Module) -> list[LayerSizes]:
    """The per-layer sizes recorded by compress (empty for a model never compressed)."""
    return [LayerSizes(**d) for d in getattr(model.config, "gatecore_layers", None) or []]
