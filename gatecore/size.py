"""What compression saves: parameters (total, encoder linear) and FLOPs per token, in both layouts.

Parameters of a gated or LoRA-wrapped model are counted as the plain model they stand for:
the frozen weights and biases, without gate thetas or LoRA factors (a merged LoRA adds nothing).

    FLOPs/token = 2 * sum over encoder linears of (out * in)        (multiply-adds, biases ignored)
                + 4 * seq * (query width) per layer                  (q.k scores and the weighted sum of v,
                                                                       full attention over `seq` tokens)

The same compression is reported in both layouts (compress.py, compress_hidden.py): "inner" keeps the
hidden-width columns/rows the gates closed as zeros, "hidden" drops them (gathers and scatters: memory
traffic, no FLOPs). The model's own layout is measured; the other one is derived from its zeros or indices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from .checks import check_int
from .compress import layer_sizes
from .compress_hidden import InputGather, OutputScatter, hidden_kept, hidden_sites
from .families import attention_parts, encoder_layers, family
from .parameters import gate_parameters, ids, lora_parameters


def _linears(layer: nn.Module) -> list[nn.Linear]:
    """The plain nn.Linear weights of a block; gate/LoRA wrappers hold theirs as `base`."""
    return [m for m in layer.modules() if isinstance(m, nn.Linear)]


def count_model_parameters(model: nn.Module) -> int:
    """All parameters except gate thetas and LoRA factors."""
    skip = ids(gate_parameters(model) + lora_parameters(model))
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def encoder_linear_parameters(model: nn.Module) -> int:
    return sum(
        l.weight.numel() + (l.bias.numel() if l.bias is not None else 0)
        for layer in encoder_layers(model)
        for l in _linears(layer)
    )


def flops_per_token(model: nn.Module, seq: int = 128) -> int:
    kind = family(model)
    total = 0
    for layer in encoder_layers(model):
        total += sum(2 * l.weight.numel() for l in _linears(layer))
        total += 4 * seq * attention_parts(layer, kind)[1].out_features
    return total


def hidden_width_savings(model: nn.Module) -> tuple[int, int]:
    """(weights and biases, FLOPs/token) that the hidden layout removes beyond the inner one, for this model's gates."""
    weights = flops = 0
    for _, _, mod, side in hidden_sites(model):
        kept, width = hidden_kept(mod, side)
        other = mod.out_features if side == "in" else mod.in_features
        linear = mod.linear if isinstance(mod, (InputGather, OutputScatter)) else mod
        bias = side == "out" and getattr(linear, "bias", None) is not None
        weights += (width - kept) * (other + bias)
        flops += 2 * (width - kept) * other
    return weights, flops


@dataclass
class LayoutSize:
    """Sizes of a compressed model in one layout."""

    params: int
    encoder_linear: int
    flops_per_token: int


@dataclass
class SizeReport:
    """Dense vs compressed; `compressed_*` are the model's own (`layout`), `inner` / `hidden` both layouts."""

    seq: int
    dense_params: int
    compressed_params: int
    dense_encoder_linear: int
    compressed_encoder_linear: int
    dense_flops_per_token: int
    compressed_flops_per_token: int
    padding_weights: int  # kept only to make head sizes uniform (see compress.py)
    layout: str
    inner: LayoutSize
    hidden: LayoutSize

    def removed(self, layout: str) -> dict:
        """Fractions of the parameters, encoder-linear weights and FLOPs/token removed in `layout`, and the FLOP ceiling."""
        s = getattr(self, layout)
        return {
            "params_removed": 1 - s.params / self.dense_params,
            "encoder_linear_removed": 1 - s.encoder_linear / self.dense_encoder_linear,
            "flops_removed": 1 - s.flops_per_token / self.dense_flops_per_token,
            "flop_speedup_ceiling": self.dense_flops_per_token / s.flops_per_token,
        }

    @property
    def params_removed(self) -> float:
        return 1 - self.compressed_params / self.dense_params

    @property
    def encoder_linear_removed(self) -> float:
        return 1 - self.compressed_encoder_linear / self.dense_encoder_linear

    @property
    def flops_removed(self) -> float:
        return 1 - self.compressed_flops_per_token / self.dense_flops_per_token

    @property
    def flop_speedup_ceiling(self) -> float:
        return self.dense_flops_per_token / self.compressed_flops_per_token

    def as_dict(self) -> dict:
        d = asdict(self)
        for layout in ("inner", "hidden"):
            d[layout].update(self.removed(layout))
        return {
            **d,
            "params_removed": self.params_removed,
            "encoder_linear_removed": self.encoder_linear_removed,
            "flops_removed": self.flops_removed,
            "flop_speedup_ceiling": self.flop_speedup_ceiling,
        }

    def __str__(self) -> str:
        rows = [
            ("parameters", "params", self.dense_params),
            ("encoder linear", "encoder_linear", self.dense_encoder_linear),
            (f"FLOPs/token@{self.seq}", "flops", self.dense_flops_per_token),
        ]
        lines = [
            f"{'':17}{'dense':>12}  {'inner layout' + (' *' if self.layout == 'inner' else ''):>24}  "
            f"{'hidden layout' + (' *' if self.layout == 'hidden' else ''):>24}"
        ]
        for label, key, dense in rows:
            cells = []
            for layout in ("inner", "hidden"):
                s = getattr(self, layout)
                value = s.flops_per_token if key == "flops" else getattr(s, key)
                cells.append(f"{value:>12,} ({self.removed(layout)[key + '_removed']:>5.1%} off)")
            lines.append(f"{label:<17}{dense:>12,}  " + "  ".join(f"{c:>24}" for c in cells))
        lines.append(
            f"FLOP-ratio ceiling: inner {self.removed('inner')['flop_speedup_ceiling']:.2f}x, hidden "
            f"{self.removed('hidden')['flop_speedup_ceiling']:.2f}x; * = this model's layout; "
            f"{self.padding_weights:,} weights kept as head padding"
        )
        return "\n".join(lines)


def size_report(dense: nn.Module, compressed: nn.Module, seq: int = 128) -> SizeReport:
    """Sizes of a dense (plain or gated) model and its compressed version; FLOPs at sequence length `seq` (>= 1)."""
    check_int("seq", seq, 1)
    own = LayoutSize(
        count_model_parameters(compressed), encoder_linear_parameters(compressed), flops_per_token(compressed, seq)
    )
    weights, flops = hidden_width_savings(compressed)
    layout = getattr(compressed.config, "gatecore_layout", "inner")
    sign = 1 if layout == "hidden" else -1  # the other layout: add back (hidden) or take away (inner) the savings
    other = LayoutSize(
        own.params + sign * weights, own.encoder_linear + sign * weights, own.flops_per_token + sign * flops
    )
    inner, hidden = (other, own) if layout == "hidden" else (own, other)
    return SizeReport(
        seq,
        count_model_parameters(dense),
        own.params,
        encoder_linear_parameters(dense),
        own.encoder_linear,
        flops_per_token(dense, seq),
        own.flops_per_token,
        sum(s.padding_weights for s in layer_sizes(compressed)),
        layout,
        inner,
        hidden,
    )
