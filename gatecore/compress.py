"""Physical compression: a gated model becomes a smaller model of the same class (DESIGN.md section 3).

    compress(model)   # in place; returns the model, e.g. a smaller BertForSequenceClassification

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
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from .accounting import check_finite_gates
from .gates import GatedLinear
from .inject import _set_module, merge_lora

BERT_LIKE = ("bert", "roberta", "xlm-roberta", "camembert", "electra")
LLAMA_LIKE = ("llama", "mistral", "qwen2")


@dataclass
class Folded:
    """A linear layer with its gates (and LoRA) folded into plain tensors."""
    weight: torch.Tensor
    bias: torch.Tensor | None
    requires_grad: bool

    def row_live(self) -> torch.Tensor:
        """Rows whose output is not identically zero."""
        live = (self.weight != 0).any(1)
        return live | (self.bias != 0) if self.bias is not None else live

    def row_has_weights(self) -> torch.Tensor:
        return (self.weight != 0).any(1)

    def col_live(self) -> torch.Tensor:
        return (self.weight != 0).any(0)

    def bias_or_zeros(self) -> torch.Tensor:
        return self.bias if self.bias is not None else self.weight.new_zeros(self.weight.shape[0])


def fold(mod: nn.Module) -> Folded:
    """W' = diag(z_r) W diag(z_c), b' = z_r * b for a GatedLinear; a plain nn.Linear as is."""
    if isinstance(mod, GatedLinear):
        z_r, z_c = mod.eval_gates()
        b = mod.base.bias
        return Folded(z_r[:, None] * mod.base.weight * z_c[None, :], None if b is None else b * z_r,
                      mod.base.weight.requires_grad)
    if isinstance(mod, nn.Linear):
        return Folded(mod.weight.detach().clone(), None if mod.bias is None else mod.bias.detach().clone(),
                      mod.weight.requires_grad)
    raise TypeError(f"expected an nn.Linear or GatedLinear, got {type(mod).__name__}")


def make_linear(f: Folded, rows=None, cols=None, row_scale: float = 1.0) -> nn.Linear:
    """A plain nn.Linear holding W'[rows][:, cols] (rows times row_scale) and b'[rows]."""
    w = f.weight if rows is None else f.weight[rows]
    w = w if cols is None else w[:, cols]
    b = None if f.bias is None else (f.bias if rows is None else f.bias[rows])
    if row_scale != 1.0:
        w, b = w * row_scale, None if b is None else b * row_scale
    out = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    out.weight.data.copy_(w)
    out.weight.requires_grad_(f.requires_grad)
    if b is not None:
        out.bias.data.copy_(b)
        out.bias.requires_grad_(f.requires_grad)
    return out


def pick(live: torch.Tensor, n: int) -> torch.Tensor:
    """Sorted indices of the live entries, padded with the first dead ones up to n."""
    idx = torch.cat([live.nonzero().flatten(), (~live).nonzero().flatten()])
    return idx[:n].sort().values


def fold_constants(down: Folded, const: torch.Tensor, values: torch.Tensor) -> None:
    """Move constant-valued neurons into the down bias: b += W[:, const] @ values, then W[:, const] = 0.

    Zeroing the columns makes those neurons dead, so one kept as padding contributes nothing twice.
    """
    if not const.any() or not (values != 0).any():
        return
    extra = down.weight[:, const] @ values
    down.bias = extra if down.bias is None else down.bias + extra
    down.weight[:, const] = 0


@dataclass
class LayerSizes:
    """What one compressed layer kept; `padding_weights` is the cost of the uniform head rule."""
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    padding_weights: int
    rope_dims: list[int] | None = None  # LLaMA: indices into the full rotary dim, when fewer pairs are kept


def _family(model: nn.Module) -> str:
    mtype = getattr(getattr(model, "config", None), "model_type", None)
    if mtype in BERT_LIKE:
        return "bert"
    if mtype in LLAMA_LIKE:
        return "llama"
    raise ValueError(f"compress supports model_type in {BERT_LIKE + LLAMA_LIKE}, got {mtype!r}")


def encoder_layers(model: nn.Module):
    """The transformer blocks of a BERT-like (encoder.layer) or LLaMA-like (layers) model."""
    base = model.base_model
    return base.encoder.layer if _family(model) == "bert" else base.layers


def _fold_leftover_gates(model: nn.Module) -> None:
    """Gates outside the known layer structure (e.g. on a head) fold into a same-shape Linear."""
    for name, mod in [(n, m) for n, m in model.named_modules() if isinstance(m, GatedLinear)]:
        _set_module(model, name, make_linear(fold(mod)))


def _update_config(model: nn.Module, family: str, sizes: list[LayerSizes]) -> None:
    """Per-layer sizes go to config.gatecore_layers; the global fields only where they describe every layer."""
    cfg = model.config
    first = sizes[0]
    same = all((s.heads, s.kv_heads, s.head_dim, s.intermediate, s.rope_dims)
               == (first.heads, first.kv_heads, first.head_dim, first.intermediate, first.rope_dims) for s in sizes)
    if all(s.intermediate == first.intermediate for s in sizes):
        cfg.intermediate_size = first.intermediate
    if family == "bert":
        full_attention = all(s.heads == cfg.num_attention_heads and s.head_dim * s.heads == cfg.hidden_size for s in sizes)
        loadable = same and full_attention
    else:
        loadable = same and first.rope_dims is None and first.head_dim == getattr(cfg, "head_dim", first.head_dim)
        if loadable:
            cfg.head_dim = first.head_dim  # explicit, so changing the head count keeps it
            cfg.num_attention_heads, cfg.num_key_value_heads = first.heads, first.kv_heads
    cfg.gatecore_compressed = True
    cfg.gatecore_uniform = bool(loadable)  # True: plain from_pretrained rebuilds these shapes
    cfg.gatecore_layers = [asdict(s) for s in sizes]


@torch.no_grad()
def compress(model: nn.Module) -> nn.Module:
    """Remove every structure the eval gates allow, in place; returns the same (now smaller) model.

    The result has no gates, the same class, smaller nn.Linear shapes, and outputs equal to the
    gated model's eval outputs (up to rounding). It is returned in **eval mode**, whatever the
    mode before: it is built from the eval gates, and is an inference model (as `load_compressed`
    returns it); call `.train()` to finetune it further. A model compressed before, with no gates
    added since, is returned unchanged; a model that was never gated is an error, and so are NaN/inf
    gate parameters (checked, like the model type, before anything changes).
    """
    if not any(isinstance(m, GatedLinear) for m in model.modules()):
        if getattr(getattr(model, "config", None), "gatecore_compressed", False):
            return model
        raise ValueError("compress needs a gated model (gatecore.add_gates) with some gates closed; "
                         "this model has no GatedLinear layers")
    family = _family(model)
    check_finite_gates(model)
    merge_lora(model)
    if family == "bert":
        from .compress_bert import compress_bert_layer as compress_layer
    else:
        from .compress_llama import compress_llama_layer as compress_layer
    sizes = [compress_layer(layer) for layer in encoder_layers(model)]
    _fold_leftover_gates(model)
    _update_config(model, family, sizes)
    return model.eval()


def layer_sizes(model: nn.Module) -> list[LayerSizes]:
    """The per-layer sizes recorded by compress (empty for a model never compressed)."""
    return [LayerSizes(**d) for d in getattr(model.config, "gatecore_layers", None) or []]
