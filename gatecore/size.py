"""What compression saves: parameters (total, encoder linear) and FLOPs per token.

Parameters of a gated or LoRA-wrapped model are counted as the plain model they stand for:
the frozen weights and biases, without gate thetas or LoRA factors (a merged LoRA adds nothing).

    FLOPs/token = 2 * sum over encoder linears of (out * in)        (multiply-adds, biases ignored)
                + 4 * seq * (query width) per layer                  (q.k scores and the weighted sum of v,
                                                                       full attention over `seq` tokens)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from .checks import check_int
from .compress import layer_sizes
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
    return sum(l.weight.numel() + (l.bias.numel() if l.bias is not None else 0)
               for layer in encoder_layers(model) for l in _linears(layer))


def flops_per_token(model: nn.Module, seq: int = 128) -> int:
    kind = family(model)
    total = 0
    for layer in encoder_layers(model):
        total += sum(2 * l.weight.numel() for l in _linears(layer))
        total += 4 * seq * attention_parts(layer, kind)[1].out_features
    return total


@dataclass
class SizeReport:
    seq: int
    dense_params: int
    compressed_params: int
    dense_encoder_linear: int
    compressed_encoder_linear: int
    dense_flops_per_token: int
    compressed_flops_per_token: int
    padding_weights: int  # kept only to make head sizes uniform (see compress.py)

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
        return {**asdict(self), "params_removed": self.params_removed, "encoder_linear_removed": self.encoder_linear_removed,
                "flops_removed": self.flops_removed, "flop_speedup_ceiling": self.flop_speedup_ceiling}

    def __str__(self) -> str:
        return (f"parameters       {self.dense_params:>12,} -> {self.compressed_params:>12,}  ({self.params_removed:.1%} removed)\n"
                f"encoder linear   {self.dense_encoder_linear:>12,} -> {self.compressed_encoder_linear:>12,}  "
                f"({self.encoder_linear_removed:.1%} removed; {self.padding_weights:,} weights kept as head padding)\n"
                f"FLOPs/token@{self.seq:<4} {self.dense_flops_per_token:>12,} -> {self.compressed_flops_per_token:>12,}  "
                f"({self.flops_removed:.1%} removed; ceiling {self.flop_speedup_ceiling:.2f}x)")


def size_report(dense: nn.Module, compressed: nn.Module, seq: int = 128) -> SizeReport:
    """Sizes of a dense (plain or gated) model and its compressed version; FLOPs at sequence length `seq` (>= 1)."""
    check_int("seq", seq, 1)
    return SizeReport(seq, count_model_parameters(dense), count_model_parameters(compressed),
                      encoder_linear_parameters(dense), encoder_linear_parameters(compressed),
                      flops_per_token(dense, seq), flops_per_token(compressed, seq),
                      sum(s.padding_weights for s in layer_sizes(compressed)))
