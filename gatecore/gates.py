"""Stochastic row/column gates on a frozen linear layer (docs/design.md §1).

    y = (W (x * z_c) + b) * z_r
    mu = tanh(theta)
    train: z = clamp(mu + 0.5 + sigma * eps, 0, 1),  eps ~ N(0, 1) fresh each forward
    eval:  z = clamp(mu + 0.5, 0, 1)

Around a plain `nn.Linear`, on inputs with more numbers than the weight, the forward runs
through `gated_matmul.gated_linear`, which folds the gates into a scaled copy of the weight and
has a backward that needs no weight gradient; otherwise (few tokens, or gates around a
`LoRALinear`, i.e. around W + BA) the gates scale the activations.

Dtypes: theta is float32 on a half-precision layer (`checks.check_adapter_dtype`, docs/design.md §2); the
gates are cast to the weight's dtype where they meet it, so the matmuls run in the model's dtype and
a float32/float64 layer computes exactly as it would without the casts.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .checks import check_adapter_dtype
from .gated_matmul import gated_linear

DEFAULT_SIGMA = 0.1
DEFAULT_REG_SIGMA = 0.5
_INIT_TRUNC = 3.0  # theta init is truncated at +-3 std so every eval gate starts at exactly 1


def _check_positive(name: str, value: float) -> float:
    if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


class Gate(nn.Module):
    """One vector of gates: parameter `theta`, mean `mu = tanh(theta)`.

    `sigma` is the forward noise scale; `reg_sigma` the scale inside the
    regulariser's Phi (None -> 0.5, the authors' default). Setting
    `fixed_eps` (a tensor of shape (n,)) replaces the fresh noise by that
    draw in training mode, e.g. to make a deterministic loss for Hessian
    products.
    """

    def __init__(
        self,
        n: int,
        sigma: float = DEFAULT_SIGMA,
        reg_sigma: float | None = None,
        init_mean: float = 1.0,
        init_std: float = 0.1,
        device=None,
        dtype=None,
    ):
        super().__init__()
        self.sigma = _check_positive("sigma", sigma)
        self.reg_sigma = _check_positive("reg_sigma", DEFAULT_REG_SIGMA if reg_sigma is None else reg_sigma)
        if not math.isfinite(init_mean) or not math.isfinite(init_std) or init_std < 0:
            raise ValueError(f"init_mean must be finite and init_std >= 0, got {init_mean!r}, {init_std!r}")
        theta = torch.empty(n, device=device, dtype=dtype)
        if init_std > 0:
            nn.init.trunc_normal_(
                theta, init_mean, init_std, init_mean - _INIT_TRUNC * init_std, init_mean + _INIT_TRUNC * init_std
            )
        else:
            theta.fill_(init_mean)
        self.theta = nn.Parameter(theta)
        self.fixed_eps: torch.Tensor | None = None
        self.generator: torch.Generator | None = None  # own noise stream (e.g. one per rank); None = global RNG

    @property
    def n(self) -> int:
        return self.theta.numel()

    @property
    def mu(self) -> torch.Tensor:
        return torch.tanh(self.theta)

    def eval_gate(self) -> torch.Tensor:
        """Deterministic gate clamp(mu + 0.5, 0, 1); exactly 0 means removable."""
        return torch.clamp(self.mu + 0.5, 0.0, 1.0)

    def forward(self) -> torch.Tensor:
        if not self.training:
            return self.eval_gate()
        if self.fixed_eps is not None:
            eps = self.fixed_eps
        elif self.generator is not None:
            eps = torch.randn(
                self.theta.shape, generator=self.generator, device=self.theta.device, dtype=self.theta.dtype
            )
        else:
            eps = torch.randn_like(self.theta)
        return torch.clamp(self.mu + 0.5 + self.sigma * eps, 0.0, 1.0)

    def prob_open(self, reg_sigma: float | None = None) -> torch.Tensor:
        """Regulariser's P(open) = Phi((mu + 0.5) / reg_sigma), differentiable."""
        s = self.reg_sigma if reg_sigma is None else reg_sigma
        return torch.special.ndtr((self.mu + 0.5) / s)

    def train_prob_open(self) -> torch.Tensor:
        """P(train gate > 0) = Phi((mu + 0.5) / sigma)."""
        return torch.special.ndtr((self.mu + 0.5) / self.sigma)

    def extra_repr(self) -> str:
        return f"n={self.n}, sigma={self.sigma}, reg_sigma={self.reg_sigma}"


def _input_mean(x: torch.Tensor) -> torch.Tensor:
    """Detached mean of the input over all leading dims (batch, sequence, padding included), at least float32."""
    with torch.no_grad():
        return x.detach().reshape(-1, x.shape[-1]).mean(0, dtype=torch.promote_types(x.dtype, torch.float32))


def track_input_means(model: nn.Module, on: bool = True) -> int:
    """Switch recording of x_bar (each GatedLinear's `input_mean`) on or off; returns the number of layers.

    On: every forward stores the detached mean of the layer's input over batch and sequence
    (one reduction over the input, no extra pass over data), replacing the previous one.
    Off: recording stops and the stored means are dropped.
    """
    if not isinstance(on, bool):
        raise TypeError(f"on must be True or False, got {on!r}")
    layers = [m for m in model.modules() if isinstance(m, GatedLinear)]
    if not layers:
        raise ValueError("the model has no gated layers; call gatecore.add_gates first")
    for m in layers:
        m.track_input_mean = on
        if not on:
            m.input_mean = None
    return len(layers)


class GatedLinear(nn.Module):
    """`y = (base(x * z_c)) * z_r` around a frozen `nn.Linear` (or `LoRALinear`).

    `base` keeps its own weight and bias, so the bias is gated by the row gate
    as in docs/design.md §1, and a layer without bias stays without one.
    """

    def __init__(
        self,
        base: nn.Module,
        rows: bool = True,
        cols: bool = True,
        sigma: float = DEFAULT_SIGMA,
        reg_sigma: float | None = None,
        init_mean: float = 1.0,
        init_std: float = 0.1,
        adapter_dtype: torch.dtype | None = None,
    ):
        super().__init__()
        if not (rows or cols):
            raise ValueError("GatedLinear needs rows=True, cols=True or both")
        self.base = base
        w = base.weight
        kw = dict(
            sigma=sigma,
            reg_sigma=reg_sigma,
            init_mean=init_mean,
            init_std=init_std,
            device=w.device,
            dtype=check_adapter_dtype(w.dtype, adapter_dtype),
        )
        self.row_gate = Gate(base.out_features, **kw) if rows else None
        self.col_gate = Gate(base.in_features, **kw) if cols else None
        # x_bar for the kurtosis weights (gatecore.kurtosis): switched on by track_input_means
        self.track_input_mean = False
        self.input_mean: torch.Tensor | None = None
        self.train(base.training)  # a wrapper joins the model in its current mode

    in_features = property(lambda self: self.base.in_features)
    out_features = property(lambda self: self.base.out_features)
    weight = property(lambda self: self.base.weight)
    bias = property(lambda self: self.base.bias)

    def gates(self) -> list[Gate]:
        return [g for g in (self.row_gate, self.col_gate) if g is not None]

    def _ones(self, n: int) -> torch.Tensor:
        return torch.ones(n, device=self.weight.device, dtype=self.weight.dtype)

    def eval_gates(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_r, z_c) in eval mode; an ungated side is all ones."""
        z_r = self.row_gate.eval_gate() if self.row_gate is not None else self._ones(self.out_features)
        z_c = self.col_gate.eval_gate() if self.col_gate is not None else self._ones(self.in_features)
        return z_r, z_c

    def _gate_values(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(z_r, z_c) as the current mode draws them (noisy in training)."""
        z_r = self.row_gate() if self.row_gate is not None else self._ones(self.out_features)
        z_c = self.col_gate() if self.col_gate is not None else self._ones(self.in_features)
        return z_r, z_c

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.track_input_mean:
            self.input_mean = _input_mean(x)
        tokens = x.numel() // max(1, x.shape[-1])
        # Fold the gates into the weight when that touches fewer numbers than scaling the activations
        dt = self.weight.dtype  # float32 gates meet a half-precision layer in its dtype (a no-op otherwise)
        if type(self.base) is nn.Linear and tokens * (self.in_features + self.out_features) >= self.weight.numel():
            z_r, z_c = self._gate_values()
            return gated_linear(x, self.base.weight, self.base.bias, z_r.to(dt), z_c.to(dt))
        if self.col_gate is not None:
            x = x * self.col_gate().to(dt)
        y = self.base(x)
        if self.row_gate is not None:
            y = y * self.row_gate().to(dt)
        return y

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, rows={self.row_gate is not None}, cols={self.col_gate is not None}"
