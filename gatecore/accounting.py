"""Parameter accounting and the per-matrix gate report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .gates import GatedLinear
from .parameters import gate_parameters, head_parameters, ids, lora_parameters


@dataclass
class ParamCount:
    """Trainable parameters by group (gate, lora, bias, head, other_trainable), then frozen and total."""

    gate: int = 0
    lora: int = 0
    bias: int = 0
    head: int = 0
    other_trainable: int = 0
    frozen: int = 0
    total: int = 0

    @property
    def trainable(self) -> int:
        return self.gate + self.lora + self.bias + self.head + self.other_trainable

    def as_dict(self) -> dict:
        return {**asdict(self), "trainable": self.trainable}


def count_parameters(model: nn.Module) -> ParamCount:
    """Count every parameter once: trainable ones by group, the rest as frozen.

    A head bias counts as head; a gated layer's bias as bias.
    """
    head_ids, gate_ids, lora_ids = ids(head_parameters(model)), ids(gate_parameters(model)), ids(lora_parameters(model))
    c = ParamCount()
    for name, p in model.named_parameters():
        n = p.numel()
        c.total += n
        if not p.requires_grad:
            c.frozen += n
        elif id(p) in head_ids:
            c.head += n
        elif id(p) in gate_ids:
            c.gate += n
        elif id(p) in lora_ids:
            c.lora += n
        elif name.split(".")[-1] == "bias":
            c.bias += n
        else:
            c.other_trainable += n
    return c


def gated_layers(model: nn.Module) -> dict[str, GatedLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, GatedLinear)}


def nonfinite_gates(model: nn.Module) -> dict[str, int]:
    """{gated layer name: number of NaN/inf gate parameters (theta)} for the layers that have any."""
    out = {}
    for name, m in gated_layers(model).items():
        bad = sum(int((~torch.isfinite(g.theta.detach())).sum()) for g in m.gates())
        if bad:
            out[name] = bad
    return out


def check_finite_gates(model: nn.Module) -> None:
    """Raise ValueError naming every gated layer whose gate parameters hold NaN or inf.

    A NaN theta gives a NaN gate (clamp keeps NaN): NaN outputs, a gate that is neither open nor
    closed. Training runs call this to stop instead of recording NaN results; `gate_report` and
    `compress` call it before they count or remove anything.
    """
    bad = nonfinite_gates(model)
    if bad:
        shown = ", ".join(f"{n} ({k})" for n, k in list(bad.items())[:8]) + (", ..." if len(bad) > 8 else "")
        raise ValueError(
            f"non-finite (NaN/inf) gate parameters in {len(bad)} gated layer(s): {shown}; "
            "the run diverged (try a smaller learning rate or lam)"
        )


@dataclass
class LayerGates:
    name: str
    out_features: int
    in_features: int
    rows_kept: int
    cols_kept: int

    @property
    def removed_fraction(self) -> float:
        """Fraction of this weight matrix whose row or column gate is closed."""
        return 1.0 - self.rows_kept * self.cols_kept / (self.out_features * self.in_features)


@dataclass
class GateReport:
    layers: list[LayerGates] = field(default_factory=list)

    @property
    def gated_weights(self) -> int:
        return sum(l.out_features * l.in_features for l in self.layers)

    @property
    def removable_weights(self) -> int:
        return sum(l.out_features * l.in_features - l.rows_kept * l.cols_kept for l in self.layers)

    @property
    def removed_fraction(self) -> float:
        """Model-wide fraction of gated weight entries whose row or column gate is closed."""
        return self.removable_weights / self.gated_weights if self.layers else 0.0

    def as_dict(self) -> dict:
        return {
            "removed_fraction": self.removed_fraction,
            "gated_weights": self.gated_weights,
            "removable_weights": self.removable_weights,
            "layers": [{**asdict(l), "removed_fraction": l.removed_fraction} for l in self.layers],
        }

    def __str__(self) -> str:
        w = max([len(l.name) for l in self.layers] + [5])
        lines = [f"{'layer':<{w}}  {'rows kept':>12}  {'cols kept':>12}  removed"]
        for l in self.layers:
            lines.append(
                f"{l.name:<{w}}  {l.rows_kept:>5}/{l.out_features:<6}  {l.cols_kept:>5}/{l.in_features:<6}  "
                f"{l.removed_fraction:6.1%}"
            )
        lines.append(
            f"gated weights removable: {self.removable_weights}/{self.gated_weights} = {self.removed_fraction:.1%}"
        )
        return "\n".join(lines)


def gate_report(model: nn.Module) -> GateReport:
    """Per gated layer: rows and columns whose eval gate is > 0, and what that removes.

    Raises ValueError (naming the layers) when a gate parameter is NaN or inf.
    """
    layers = gated_layers(model)
    if not layers:
        raise ValueError("the model has no gated layers; call gatecore.add_gates first")
    check_finite_gates(model)
    rep = GateReport()
    for name, m in layers.items():
        z_r, z_c = m.eval_gates()
        rep.layers.append(LayerGates(name, m.out_features, m.in_features, int((z_r > 0).sum()), int((z_c > 0).sum())))
    return rep
