"""The hidden-width layout: also drop what the gates closed on the residual (hidden) width (docs/design.md §3).

`compress(model)` (layout "inner") shrinks only the inner widths: heads, head dims, FFN neurons. A gate
closed on the hidden width, a column of a matrix that reads the residual stream (q, k, v, FFN-up; LLaMA
also FFN-gate) or a row of one that writes it (attn-out, FFN-down), is folded into the weight as a zero
column/row, and its FLOPs stay. `compress(model, layout="hidden")` drops those too, per linear layer:

    reader:  y = W[:, kept] x[..., kept]                       (InputGather: one gather of its input)
    writer:  y = scatter(W[kept] x + b[kept]) to full width     (OutputScatter: zeros at the dropped rows)

Both are exact: a dropped column multiplies nothing but zeros, a dropped row outputs exactly zero (its
weights and bias are zero after folding). The residual stream, the LayerNorms and the embeddings keep
their width, so the gathers and scatters cost memory traffic, not FLOPs.

Gathers are per linear layer, not shared by q, k and v: trained gates close nearly disjoint column sets
there (on the converged MiniLM checkpoints of results/hessian/checkpoints, 0-5 of the ~63 columns each
of q, k, v closes in a layer are closed in all three), so a shared gather of their union would drop
almost nothing.

A family plugs in by listing its readers and writers in `HIDDEN_SITES` (paths inside one layer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .families import encoder_layers, family
from .fold import fold, pick
from .inject import set_module

LAYOUTS = ("inner", "hidden")

# per family: linear layers that read ("in") or write ("out") the residual stream, relative to a layer
HIDDEN_SITES = {
    "bert": {
        "attention.self.query": "in",
        "attention.self.key": "in",
        "attention.self.value": "in",
        "attention.output.dense": "out",
        "intermediate.dense": "in",
        "output.dense": "out",
    },
    "llama": {
        "self_attn.q_proj": "in",
        "self_attn.k_proj": "in",
        "self_attn.v_proj": "in",
        "self_attn.o_proj": "out",
        "mlp.gate_proj": "in",
        "mlp.up_proj": "in",
        "mlp.down_proj": "out",
    },
}


class InputGather(nn.Module):
    """`linear(x[..., in_index])`: a linear layer reading only the kept features of a `width`-wide input."""

    def __init__(self, linear: nn.Linear, in_index: torch.Tensor, width: int):
        super().__init__()
        self.linear, self.width = linear, width
        self.register_buffer("in_index", in_index.to(device=linear.weight.device, dtype=torch.long))

    in_features = property(lambda self: self.width)
    out_features = property(lambda self: self.linear.out_features)
    weight = property(lambda self: self.linear.weight)  # device and dtype, as code reading a projection expects
    bias = property(lambda self: self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.index_select(-1, self.in_index))

    def extra_repr(self) -> str:
        return f"reads {len(self.in_index)} of {self.width} features"


class OutputScatter(nn.Module):
    """`linear(x)` written at `out_index` of a `width`-wide output; the other features are exactly 0."""

    def __init__(self, linear: nn.Linear, out_index: torch.Tensor, width: int):
        super().__init__()
        self.linear, self.width = linear, width
        out_index = out_index.to(device=linear.weight.device, dtype=torch.long)
        self.register_buffer("out_index", out_index)
        # position of every output feature in [linear(x), 0]: a gather, which every runtime has
        source = torch.full((width,), len(out_index), dtype=torch.long, device=out_index.device)
        source[out_index] = torch.arange(len(out_index), device=out_index.device)
        self.register_buffer("source", source, persistent=False)

    in_features = property(lambda self: self.linear.in_features)
    out_features = property(lambda self: self.width)
    weight = property(lambda self: self.linear.weight)
    bias = property(lambda self: self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(self.linear(x), (0, 1)).index_select(-1, self.source)

    def extra_repr(self) -> str:
        return f"writes {len(self.out_index)} of {self.width} features"


def check_layout(model: nn.Module, layout: str) -> None:
    """A known layout, and for "hidden" a family with listed sites; before anything changes."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    kind = family(model)
    if layout == "hidden" and kind not in HIDDEN_SITES:
        raise ValueError(
            f"the hidden-width layout has no sites for the {kind!r} family; list its readers and "
            "writers in gatecore.compress_hidden.HIDDEN_SITES"
        )


def hidden_sites(model: nn.Module):
    """(layer, path, module, side) of every reader ("in") and writer ("out") of the residual stream."""
    sites = HIDDEN_SITES.get(family(model), {})
    for layer in encoder_layers(model):
        for path, side in sites.items():
            yield layer, path, layer.get_submodule(path), side


def _live(mod: nn.Linear, side: str) -> torch.Tensor:
    """Hidden features a linear layer needs: nonzero columns (reader), or rows with a nonzero weight or bias (writer)."""
    f = fold(mod)
    return f.col_live() if side == "in" else f.row_live()


def hidden_kept(mod: nn.Module, side: str) -> tuple[int, int]:
    """(kept, width) on the hidden side: from the index of a wrapped layer, from the zeros of a plain one."""
    if isinstance(mod, InputGather):
        return len(mod.in_index), mod.width
    if isinstance(mod, OutputScatter):
        return len(mod.out_index), mod.width
    if type(mod) is nn.Linear:
        live = _live(mod, side)
        return max(1, int(live.sum())), live.numel()
    width = mod.in_features if side == "in" else mod.out_features  # gated or LoRA: nothing folded yet
    return width, width


@torch.no_grad()
def apply_hidden_layout(model: nn.Module) -> int:
    """Wrap every plain reader/writer with dropped hidden features (in place); returns how many were wrapped.

    Runs on a model whose gates were folded (`compress`); every layer keeps at least one feature.
    """
    wrapped = 0
    for layer, path, mod, side in list(hidden_sites(model)):
        if type(mod) is not nn.Linear:
            continue
        live = _live(mod, side)
        n = max(1, int(live.sum()))
        if n == live.numel():
            continue
        idx = pick(live, n).to(mod.weight.device)
        if side == "in":
            small = _linear_like(mod, mod.weight[:, idx], mod.bias)
            set_module(layer, path, InputGather(small, idx, live.numel()))
        else:
            small = _linear_like(mod, mod.weight[idx], None if mod.bias is None else mod.bias[idx])
            set_module(layer, path, OutputScatter(small, idx, live.numel()))
        wrapped += 1
    return wrapped


def _linear_like(mod: nn.Linear, weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=weight.device, dtype=weight.dtype)
    out.weight.copy_(weight)
    out.weight.requires_grad_(mod.weight.requires_grad)
    if bias is not None:
        out.bias.copy_(bias)
        out.bias.requires_grad_(mod.bias.requires_grad)
    return out


def wrap_saved(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Rebuild the wrappers recorded in a saved state dict (`load_compressed`): `X.in_index` / `X.out_index`."""
    for key, index in state.items():
        for suffix, cls in ((".in_index", InputGather), (".out_index", OutputScatter)):
            if key.endswith(suffix):
                path = key[: -len(suffix)]
                full = model.get_submodule(path)
                w = state[path + ".linear.weight"]
                linear = nn.Linear(w.shape[1], w.shape[0], bias=path + ".linear.bias" in state)
                width = full.in_features if cls is InputGather else full.out_features
                set_module(model, path, cls(linear, index, width))
