"""Planted problems with a known answer for the gate-convergence study (issue 5).

    linear:  y = diag(r*) W diag(c*) x + noise         W frozen (m x n), r*, c* in {0,1} planted
    mlp:     y = W2 relu(diag(r*) (W1 diag(c*) x + b1)) + noise   dead hidden units and input features
    lowrank: y = (W + U V^T) x + noise                 the honest counter-case: LoRA fits, gates do not

The student is the frozen teacher weight wrapped in the library's `GatedLinear`
(or `LoRALinear`), so the process studied is gatecore's gate. The objective is

    F(mu) = E_eps[ mean_{N,m} (f(x; z(mu, eps)) - y)^2 ] + lam * R(mu)

with R = `gatecore.sparsity_penalty`. For the linear students the expectation
is exact (`closed_form_loss`: independent gates, censored-normal moments of
z = clamp(u + sigma*eps, 0, 1), u = mu + 0.5). Otherwise it is a Monte Carlo
average over K common-random-number draws pushed through the library gate at
once (`mc_losses`), with standard error std/sqrt(K).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from gatecore import GatedLinear, LoRALinear, sparsity_penalty

KINDS = ("linear", "mlp", "lowrank")


@dataclass
class Problem:
    kind: str
    X: torch.Tensor  # (N, n) inputs
    Y: torch.Tensor  # (N, m) targets
    teacher: nn.Module  # the frozen network the student starts from (no gates)
    rows_off: torch.Tensor  # planted closed row gates of the gated layer (bool); all False for lowrank
    cols_off: torch.Tensor  # planted closed column gates (bool)
    noise: float

    @property
    def gated(self) -> nn.Linear:
        """The layer that gets gates / LoRA: the first (or only) linear layer."""
        return self.teacher[0] if isinstance(self.teacher, nn.Sequential) else self.teacher


def _planted_mask(n: int, frac: float, g: torch.Generator) -> torch.Tensor:
    k = int(round(frac * n))
    if frac > 0 and not 0 < k < n:
        raise ValueError(f"planted fraction {frac} of {n} gates gives {k} closed; need 0 < k < {n}")
    mask = torch.zeros(n, dtype=torch.bool)
    mask[torch.randperm(n, generator=g)[:k]] = True
    return mask


def make_problem(
    kind: str = "linear",
    m: int = 32,
    n: int = 32,
    hidden: int = 64,
    samples: int = 256,
    rows_off: float = 0.25,
    cols_off: float = 0.25,
    noise: float = 0.0,
    rank: int = 2,
    seed: int = 0,
    dtype=torch.float64,
) -> Problem:
    """A planted instance; W ~ N(0, 1/fan_in) so outputs are of order 1 and one column matters ~1/n."""
    if kind not in KINDS:
        raise ValueError(f"problem kind must be one of {KINDS}, got {kind!r}")
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    X = rnd(samples, n)
    if kind == "mlp":
        l1, l2 = nn.Linear(n, hidden, dtype=dtype), nn.Linear(hidden, m, bias=False, dtype=dtype)
        with torch.no_grad():
            l1.weight.copy_(rnd(hidden, n) / math.sqrt(n))
            l1.bias.copy_(0.1 * rnd(hidden))
            l2.weight.copy_(rnd(m, hidden) * math.sqrt(2.0 / hidden))
        teacher = nn.Sequential(l1, nn.ReLU(), l2)
        r_off, c_off = _planted_mask(hidden, rows_off, g), _planted_mask(n, cols_off, g)
        with torch.no_grad():
            h = torch.relu((X * ~c_off) @ l1.weight.T + l1.bias) * ~r_off
            Y = h @ l2.weight.T
    else:
        teacher = nn.Linear(n, m, bias=False, dtype=dtype)
        with torch.no_grad():
            teacher.weight.copy_(rnd(m, n) / math.sqrt(n))
        W = teacher.weight.detach()
        if kind == "linear":
            r_off, c_off = _planted_mask(m, rows_off, g), _planted_mask(n, cols_off, g)
            Y = ((X * ~c_off) @ W.T) * ~r_off
        else:
            r_off, c_off = torch.zeros(m, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)
            delta = rnd(m, rank) @ rnd(rank, n) / math.sqrt(n * rank)
            Y = X @ (W + delta).T
    teacher.requires_grad_(False)
    Y = Y + noise * rnd(*Y.shape)
    return Problem(kind, X, Y, teacher, r_off, c_off, noise)


def _wrap_first(p: Problem, wrap) -> nn.Module:
    """A copy of the frozen teacher whose first (or only) linear layer is replaced by wrap(copy of it)."""
    s, layer = copy.deepcopy(p.teacher), wrap(copy.deepcopy(p.gated))
    if isinstance(s, nn.Sequential):
        s[0] = layer
        return s
    return layer


def gated_student(
    p: Problem, sigma: float, reg_sigma: float | None, init_mean: float = 1.0, init_std: float = 0.1
) -> nn.Module:
    """The teacher with row and column gates on its first linear layer."""
    return _wrap_first(
        p, lambda lin: GatedLinear(lin, sigma=sigma, reg_sigma=reg_sigma, init_mean=init_mean, init_std=init_std)
    )


def lora_student(p: Problem, r: int = 8, alpha: float = 16) -> nn.Module:
    """The teacher with LoRA on the same layer the gates sit on."""
    return _wrap_first(p, lambda lin: LoRALinear(lin, r=r, alpha=alpha))


def gated_layer(student: nn.Module) -> GatedLinear:
    return student[0] if isinstance(student, nn.Sequential) else student


def censored_moments(u: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """E[z], E[z^2] for z = clamp(u + sigma*eps, 0, 1), eps ~ N(0,1).

    With a = -u/sigma, b = (1-u)/sigma, P = Phi(b) - Phi(a), d = phi(a) - phi(b):
        E[z]   = (1 - Phi(b)) + u P + sigma d
        E[z^2] = (1 - Phi(b)) + u^2 P + 2 u sigma d + sigma^2 (P + a phi(a) - b phi(b))
    """
    a, b = -u / sigma, (1.0 - u) / sigma
    Phi, phi = torch.special.ndtr, lambda t: torch.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)  # noqa: E731
    P, d, top = Phi(b) - Phi(a), phi(a) - phi(b), 1.0 - Phi(b)
    m1 = top + u * P + sigma * d
    m2 = top + u * u * P + 2 * u * sigma * d + sigma**2 * (P + a * phi(a) - b * phi(b))
    return m1, m2


def closed_form_loss(gl: GatedLinear, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """Exact E_eps[mean (y_hat - y)^2] for y_hat = z_r * (W (x * z_c) + b), independent gates.

    E[y_hat_i^2] = E[z_r,i^2] ((W (x m_c))_i + b_i)^2 + E[z_r,i^2] sum_j W_ij^2 x_j^2 Var(z_c,j).
    """
    W, b = gl.weight, gl.bias
    ones = torch.ones((), dtype=W.dtype)
    m_r, s_r = censored_moments(gl.row_gate.mu + 0.5, gl.row_gate.sigma) if gl.row_gate is not None else (ones, ones)
    if gl.col_gate is not None:
        m_c, s_c = censored_moments(gl.col_gate.mu + 0.5, gl.col_gate.sigma)
    else:
        m_c, s_c = ones, ones
    pre = (X * m_c) @ W.T + (b if b is not None else 0.0)
    var = (X * X * (s_c - m_c * m_c)) @ (W * W).T
    return (s_r * (pre * pre + var) - 2 * Y * m_r * pre + Y * Y).mean()


def mc_losses(student: nn.Module, X: torch.Tensor, Y: torch.Tensor, draws: int, seed: int = 0) -> torch.Tensor:
    """Per-draw data losses (K,) for K fixed noise draws, all in one batched pass.

    The library gates draw z (they get `fixed_eps` of shape (K, 1, n)); the layer is then
    applied as docs/design.md §1 writes it, y = (W (x * z_c) + b) * z_r, for all K draws at once
    (tests check it against `GatedLinear.forward` draw by draw). The same `seed` gives
    the same draws: common random numbers across steps and settings.
    """
    gl = gated_layer(student)
    g = torch.Generator().manual_seed(seed)
    gates = gl.gates()
    for gate in gates:
        gate.fixed_eps = torch.randn(draws, 1, gate.n, generator=g, dtype=gate.theta.dtype)
    was = gl.training
    gl.train()
    try:
        z_r, z_c = (
            (gl.row_gate() if gl.row_gate is not None else 1.0),
            (gl.col_gate() if gl.col_gate is not None else 1.0),
        )
    finally:
        for gate in gates:
            gate.fixed_eps = None
        gl.train(was)
    y = gl.base(X * z_c) * z_r  # (K, N, out)
    for layer in student[1:] if isinstance(student, nn.Sequential) else ():
        y = layer(y)
    return ((y - Y) ** 2).mean(dim=(1, 2))


@dataclass
class ObjectiveSpec:
    """How F is defined: the sparsity objective and its weight; how E_eps is estimated."""

    lam: float = 0.0
    objective: str = "l0"
    target: float | None = None
    draws: int = 256  # Monte Carlo draws where no closed form applies
    mc_seed: int = 12345


def expected_objective(student: nn.Module, p: Problem, spec: ObjectiveSpec) -> tuple[torch.Tensor, float]:
    """(F, standard error of its estimate); differentiable in the trainable parameters.

    Gates on a linear teacher: closed form (error 0). Gates on the MLP: Monte Carlo.
    LoRA: deterministic data loss (no gates, no penalty).
    """
    if not any(isinstance(m, GatedLinear) for m in student.modules()):
        return ((student(p.X) - p.Y) ** 2).mean(), 0.0
    if isinstance(student, GatedLinear):
        data, se = closed_form_loss(student, p.X, p.Y), 0.0
    else:
        losses = mc_losses(student, p.X, p.Y, spec.draws, spec.mc_seed)
        data, se = losses.mean(), float(losses.detach().std() / math.sqrt(spec.draws))
    if spec.lam:
        data = data + spec.lam * sparsity_penalty(
            student, spec.objective, None if spec.objective == "l0" else spec.target
        )
    return data, se


def lora_optimum(p: Problem, r: int) -> float:
    """Exact min of mean (x^T (W + D)^T - y)^2 over rank(D) <= r (reduced-rank regression); linear teachers only.

    D_ols from least squares on the residual, then its fitted values projected on their top-r right
    singular vectors (the Eckart-Young step in output space).
    """
    if p.kind == "mlp":
        raise ValueError("lora_optimum has a closed form only for the linear teachers, not 'mlp'")
    R = p.Y - p.X @ p.gated.weight.T
    D_t = torch.linalg.lstsq(p.X, R).solution  # (n, m)
    V = torch.linalg.svd(p.X @ D_t, full_matrices=False).Vh[:r].T  # (m, r)
    return float(((R - p.X @ D_t @ V @ V.T) ** 2).mean())
