"""The Hessian in a parametrization both methods share: per unit of weight change (docs/design.md §11).

Each adapted matrix changes by Delta W(theta) (gates: z_r W z_c - W, with the bias row-gated too;
LoRA: s B A, s = alpha / r). With J = d vec(Delta W) / d theta and D = diag(J^T J), the Jacobi-scaled

    H_J = D^{-1/2} H D^{-1/2}          on the coordinates with D_ii > 0

measures curvature per squared Frobenius norm of the weight change each coordinate alone produces:
its spectrum is invariant to any per-coordinate rescaling of theta (tanh' of the gates, LoRA's alpha/r,
the norm of the gated row), which is what separates the two parametrizations' raw spectra. Coordinates
with D_ii = 0 move no weight at first order (saturated gates; LoRA's A while B = 0) and are deflated,
counted, like saturated gates. With noise draws, D is the mean of diag(J^T J) over the operator's draws
(the metric of the averaged objective). `Scaled` takes any positive diagonal, e.g. Adam's
1 / (sqrt(v_hat) + eps) from a checkpoint that carries the optimizer state (then d = that ** 0.5).

    d_r,i = z_r,i'^2 (sum_j (W_ij z_c,j)^2 + b_i^2)     d_c,j = z_c,j'^2 sum_i (z_r,i W_ij)^2
    d_A[a, j] = s^2 ||B[:, a]||^2                       d_B[i, a] = s^2 ||A[a, :]||^2
with z' = (1 - tanh(theta)^2) where the gate is inside (0, 1) in that draw, else 0.
"""

from __future__ import annotations

import torch

from ..gates import GatedLinear
from ..lora import LoRALinear
from .operator import Restricted


def _gate_diagonals(gl: GatedLinear, draws) -> dict:
    W = gl.weight.detach().to(torch.float64)
    b = gl.bias.detach().to(torch.float64) if gl.bias is not None else torch.zeros(W.shape[0], dtype=torch.float64)
    out = {}
    gates = {"row": gl.row_gate, "col": gl.col_gate}
    acc = {k: torch.zeros(g.n, dtype=torch.float64) for k, g in gates.items() if g is not None}
    for draw in draws:
        z, dz = {}, {}
        for k, g in gates.items():
            if g is None:
                z[k] = torch.ones(W.shape[0] if k == "row" else W.shape[1], dtype=torch.float64)
                continue
            mu = torch.tanh(g.theta.detach().to(torch.float64))
            s = mu + 0.5 + (g.sigma * draw[g].detach().cpu().to(torch.float64) if draw is not None else 0.0)
            inside = (s > 0) & (s < 1)
            z[k], dz[k] = s.clamp(0, 1), torch.where(inside, 1 - mu**2, torch.zeros_like(mu))
        if "row" in dz:
            acc["row"] += dz["row"] ** 2 * (((W * z["col"]) ** 2).sum(1) + b**2)
        if "col" in dz:
            acc["col"] += dz["col"] ** 2 * ((z["row"][:, None] * W) ** 2).sum(0)
    for k, g in gates.items():
        if g is not None:
            out[id(g.theta)] = acc[k] / len(draws)
    return out


def _lora_diagonals(lo: LoRALinear) -> dict:
    A, B, s = lo.lora_A.detach().to(torch.float64), lo.lora_B.detach().to(torch.float64), lo.scaling
    return {
        id(lo.lora_A): (s**2 * (B**2).sum(0))[:, None].expand_as(A).reshape(-1),
        id(lo.lora_B): (s**2 * (A**2).sum(1))[None, :].expand_as(B).reshape(-1),
    }


def weight_metric_diagonal(op) -> torch.Tensor:
    """diag(J^T J) over op's parameters (flat, float64, op's order); ValueError for a parameter that is
    not a gate theta or a LoRA factor (Delta W is defined for adapter parameters only)."""
    draws = op.draws or [None]
    diag = {}
    for m in op.model.modules():
        if isinstance(m, GatedLinear):
            diag.update(_gate_diagonals(m, draws))
        elif isinstance(m, LoRALinear):
            diag.update(_lora_diagonals(m))
    missing = [n for n, p in op.named if id(p) not in diag]
    if missing:
        raise ValueError(f"weight-change scaling is defined for gate and LoRA parameters only; not for {missing[:3]}")
    return torch.cat([diag[id(p)].reshape(-1) for p in op.params])


class Scaled(Restricted):
    """d ⊙ H (d ⊙ v) on the coordinates where `keep` is True (default: d > 0), an operator like
    HessianOperator: n, matvec, matmat, products. d = D^{-1/2} gives H_J of the module docstring."""

    def __init__(self, op, d: torch.Tensor, keep: torch.Tensor | None = None):
        d = torch.as_tensor(d, dtype=torch.float64).reshape(-1)
        if d.numel() != op.n or not torch.isfinite(d).all() or (d < 0).any():
            raise ValueError(f"need {op.n} finite non-negative scales, got {d.numel()}")
        keep = (d > 0) if keep is None else keep.to(torch.bool)
        super().__init__(op, keep)
        self.d = d[keep].to(op.dtype).to(op.device)

    def matvec(self, v) -> torch.Tensor:
        return self.d * super().matvec(self.d * torch.as_tensor(v, dtype=self.dtype, device=self.device).reshape(-1))

    def matmat(self, V) -> torch.Tensor:
        V = torch.as_tensor(V, dtype=self.dtype, device=self.device)
        return self.d[:, None] * super().matmat(self.d[:, None] * V)


def weight_scaled(op) -> tuple[Scaled, torch.Tensor]:
    """(H_J on the coordinates that move the weights, the mask of the deflated ones: D_ii = 0)."""
    D = weight_metric_diagonal(op)
    keep = D > 0
    return Scaled(op, torch.where(keep, D, torch.ones_like(D)).rsqrt(), keep), ~keep
