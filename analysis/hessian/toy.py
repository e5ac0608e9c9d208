"""The analytic toy: a frozen linear map adapted by gates or by a rank-r product, Hessians in closed form.

    loss L = 1/(2N) ||X W^T - Y||_F^2,  X (N x in), Y (N x out), Sigma = X^T X / N, G = dL/dW = R^T X / N

gates: W = diag(z_r) W0 diag(z_c), z = clamp(tanh(theta) + 0.5, 0, 1)  (eval gates, docs/design.md §1)
    in z:  H_rr = diag(sum_n P_ni^2) / N,  P = X diag(z_c) W0^T
           H_cc = ((diag(z_r) W0)^T (diag(z_r) W0)) * (X^T X) / N        (elementwise product)
           H_rc = W0 * (diag(z_r) P^T X + R^T X) / N
    in theta: H = J H_z J + diag(g_z * z''),  J = diag(z') -- z' = z'' = 0 for a saturated gate: a zero row.
    Symmetry: (c z_r, z_c / c) gives the same W: one flat direction per matrix while both sides are open.

LoRA: W = W0 + s B A (s = alpha / r), parameters (A, B) row-major
    H = J^T (I_out kron Sigma) J + [[0, C], [C^T, 0]],  J = s [B kron I_in,  I_out kron A^T],
    C[(a, j), (i, a')] = s G_ij delta_aa'.
    Symmetry: (A, B) -> (K^-1 A, B K) for any invertible K: r^2 flat directions dA = -K A, dB = B K,
    exact zeros of H at a stationary point; at B = 0 (LoRA's init) the whole A block is zero.

The objective actually trained (issue 13, item 2): with train-mode gates z = clamp(u + sigma eps, 0, 1),
u = mu + 0.5, the expected squared loss of one gated linear unit y = z_r * (W (x * z_c) + b) is closed form
(independent gates, censored-normal moments; the same formulas as analysis.convergence.planted):
    E[(y_i - t_i)^2] = E[z_r,i^2] (p_i^2 + sum_j W_ij^2 x_j^2 Var z_c,j) - 2 t_i E[z_r,i] p_i + t_i^2,
    p = W (x * E[z_c]) + b.    `expected_gate_loss` is the target of HessianOperator(noise_draws=K), K -> inf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from gatecore.train import lbfgs_minimize

D_OUT, D_IN, N_SAMPLES, RANK = 6, 5, 40, 2


@dataclass(frozen=True)
class ToyProblem:
    W0: torch.Tensor
    X: torch.Tensor
    Y: torch.Tensor


def make_problem(
    d_out: int = D_OUT, d_in: int = D_IN, n: int = N_SAMPLES, noise: float = 0.05, seed: int = 0
) -> ToyProblem:
    """Targets reachable by gates (a row and a column scaling of W0) plus a little noise."""
    g = torch.Generator().manual_seed(seed)
    dt = torch.float64
    W0 = torch.randn(d_out, d_in, generator=g, dtype=dt)
    a, b = 0.25 + 0.4 * torch.rand(d_out, generator=g, dtype=dt), 0.25 + 0.4 * torch.rand(d_in, generator=g, dtype=dt)
    X = torch.randn(n, d_in, generator=g, dtype=dt)
    Y = X @ (a[:, None] * W0 * b[None, :]).T + noise * torch.randn(n, d_out, generator=g, dtype=dt)
    return ToyProblem(W0, X, Y)


def _loss(W, p: ToyProblem):
    return 0.5 * ((p.X @ W.T - p.Y) ** 2).sum() / p.X.shape[0]


def gate_values(theta):
    """(z, z', z'') of the eval gate; derivatives are 0 where the clamp is active."""
    mu = torch.tanh(theta)
    s = mu + 0.5
    open_ = (s > 0) & (s < 1)
    d1 = torch.where(open_, 1 - mu**2, torch.zeros_like(mu))
    return s.clamp(0, 1), d1, torch.where(open_, -2 * mu * (1 - mu**2), torch.zeros_like(mu))


def gate_loss(theta, p: ToyProblem):
    """theta = cat(theta_r, theta_c)."""
    z_r, z_c = gate_values(theta[: p.W0.shape[0]])[0], gate_values(theta[p.W0.shape[0] :])[0]
    return _loss(z_r[:, None] * p.W0 * z_c[None, :], p)


def gate_hessian(theta, p: ToyProblem) -> torch.Tensor:
    """Closed-form Hessian of gate_loss in theta (see the module docstring)."""
    d_out, N = p.W0.shape[0], p.X.shape[0]
    (z_r, d_r, dd_r), (z_c, d_c, dd_c) = gate_values(theta[:d_out]), gate_values(theta[d_out:])
    P = (p.X * z_c) @ p.W0.T
    R = P * z_r - p.Y
    g_z = torch.cat([(R * P).sum(0), (((R * z_r) @ p.W0) * p.X).sum(0)]) / N
    M = z_r[:, None] * p.W0
    H_rr = torch.diag((P**2).sum(0)) / N
    H_cc = (M.T @ M) * (p.X.T @ p.X) / N
    H_rc = p.W0 * (z_r[:, None] * (P.T @ p.X) + R.T @ p.X) / N
    Hz = torch.cat([torch.cat([H_rr, H_rc], 1), torch.cat([H_rc.T, H_cc], 1)], 0)
    J = torch.cat([d_r, d_c])
    return J[:, None] * Hz * J[None, :] + torch.diag(g_z * torch.cat([dd_r, dd_c]))


def lora_split(theta, p: ToyProblem, r: int):
    d_out, d_in = p.W0.shape
    return theta[: r * d_in].view(r, d_in), theta[r * d_in :].view(d_out, r)


def lora_loss(theta, p: ToyProblem, r: int = RANK, scale: float = 1.0):
    """theta = cat(vec A (r x in), vec B (out x r)), row-major."""
    A, B = lora_split(theta, p, r)
    return _loss(p.W0 + scale * B @ A, p)


def lora_hessian(theta, p: ToyProblem, r: int = RANK, scale: float = 1.0) -> torch.Tensor:
    """Closed-form Hessian of lora_loss (see the module docstring)."""
    d_out, d_in = p.W0.shape
    N = p.X.shape[0]
    A, B = lora_split(theta, p, r)
    R = p.X @ (p.W0 + scale * B @ A).T - p.Y
    Sigma, G = p.X.T @ p.X / N, R.T @ p.X / N
    I_in, I_out, I_r = (torch.eye(k, dtype=A.dtype) for k in (d_in, d_out, r))
    J = scale * torch.cat([torch.kron(B, I_in), torch.kron(I_out, A.T.contiguous())], 1)
    H = J.T @ torch.kron(I_out, Sigma) @ J
    C = scale * torch.einsum("ij,ab->ajib", G, I_r).reshape(r * d_in, d_out * r)
    H[: r * d_in, r * d_in :] += C
    H[r * d_in :, : r * d_in] += C.T
    return H


def lora_symmetry_directions(theta, p: ToyProblem, r: int = RANK) -> torch.Tensor:
    """The r^2 tangents (dA, dB) = (-E_ab A, B E_ab) of the GL(r) orbit, as columns."""
    A, B = lora_split(theta, p, r)
    cols = []
    for a in range(r):
        for b in range(r):
            K = torch.zeros(r, r, dtype=A.dtype)
            K[a, b] = 1.0
            cols.append(torch.cat([(-K @ A).reshape(-1), (B @ K).reshape(-1)]))
    return torch.stack(cols, 1)


def gate_symmetry_direction(theta, p: ToyProblem) -> torch.Tensor:
    """d/dc of (c z_r, z_c / c) at c = 1, in theta: (z_r / z_r', -z_c / z_c'); only where every gate is open."""
    d_out = p.W0.shape[0]
    (z_r, d_r, _), (z_c, d_c, _) = gate_values(theta[:d_out]), gate_values(theta[d_out:])
    return torch.cat([z_r / d_r, -z_c / d_c])


def censored_moments(u: torch.Tensor, sigma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """E[z], E[z^2] for z = clamp(u + sigma eps, 0, 1): with a = -u/sigma, b = (1-u)/sigma,
    P = Phi(b) - Phi(a), d = phi(a) - phi(b):  E[z] = 1 - Phi(b) + u P + sigma d,
    E[z^2] = 1 - Phi(b) + u^2 P + 2 u sigma d + sigma^2 (P + a phi(a) - b phi(b))."""
    a, b = -u / sigma, (1.0 - u) / sigma
    Phi = torch.special.ndtr
    phi = lambda t: torch.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)  # noqa: E731
    P, d, top = Phi(b) - Phi(a), phi(a) - phi(b), 1.0 - Phi(b)
    return top + u * P + sigma * d, top + u * u * P + 2 * u * sigma * d + sigma**2 * (P + a * phi(a) - b * phi(b))


def expected_gate_loss(layer, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """E over train-mode gate noise of mean((y - Y)^2), y = z_r * (W (X * z_c) + b), for a GatedLinear
    with row and column gates (see the module docstring)."""
    W = layer.weight
    b = layer.bias if layer.bias is not None else torch.zeros(W.shape[0], dtype=W.dtype)
    m_r, s_r = censored_moments(layer.row_gate.mu + 0.5, layer.row_gate.sigma)
    m_c, s_c = censored_moments(layer.col_gate.mu + 0.5, layer.col_gate.sigma)
    pre = (X * m_c) @ W.T + b
    var = (X * X * (s_c - m_c * m_c)) @ (W * W).T
    return (s_r * (pre * pre + var) - 2 * Y * m_r * pre + Y * Y).mean()


def fit(loss_fn, theta0, steps: int = 200) -> torch.Tensor:
    """A stationary point by L-BFGS (float64), so that symmetry zeros are exact to rounding."""
    theta = theta0.clone().requires_grad_(True)
    lbfgs_minimize(
        [theta],
        lambda: loss_fn(theta),
        lr=1.0,
        max_iter=steps,
        tolerance_grad=1e-13,
        tolerance_change=0,
        history_size=50,
        line_search_fn="strong_wolfe",
    )
    return theta.detach()


def toy_spectra(r: int = RANK, seed: int = 0, n_saturated: int = 3, tol: float = 1e-8) -> dict:
    """Eigenvalues for gates at the paper's init (theta = 1: all clamped, H = 0), from mu ~ 0 (all open), at a fitted
    point, and at that point with `n_saturated` gates clamped; LoRA at its init (B = 0) and at a fitted point."""
    from gatecore.hessian import summarize

    p = make_problem(seed=seed)
    d_out, d_in = p.W0.shape
    g = torch.Generator().manual_seed(seed + 1)
    gate0 = 0.1 * torch.randn(d_out + d_in, generator=g, dtype=torch.float64)  # mu ~ 0: every gate open
    gate_fit = fit(lambda t: gate_loss(t, p), gate0)
    gate_sat = gate_fit.clone()
    gate_sat[:n_saturated] = torch.tensor([3.0, -3.0, 2.0][:n_saturated] + [3.0] * max(0, n_saturated - 3))
    lora0 = torch.cat(
        [0.3 * torch.randn(r * d_in, generator=g, dtype=torch.float64), torch.zeros(d_out * r, dtype=torch.float64)]
    )
    lora_fit = fit(
        lambda t: lora_loss(t, p, r), lora0 + 0.1 * torch.randn(lora0.shape, generator=g, dtype=torch.float64)
    )
    out = {}
    paper_init = torch.ones(d_out + d_in, dtype=torch.float64)  # theta = 1: every eval gate clamped at 1
    for name, H in [
        ("gates_paper_init", gate_hessian(paper_init, p)),
        ("gates_start_mu0", gate_hessian(gate0, p)),
        ("gates_fit", gate_hessian(gate_fit, p)),
        (f"gates_fit_{n_saturated}_saturated", gate_hessian(gate_sat, p)),
        ("lora_init", lora_hessian(lora0, p, r)),
        ("lora_fit", lora_hessian(lora_fit, p, r)),
    ]:
        ev = torch.linalg.eigvalsh(H).numpy()
        out[name] = {"eigenvalues": ev.tolist(), **summarize(ev, tol)}
    out["config"] = dict(
        d_out=d_out,
        d_in=d_in,
        n=N_SAMPLES,
        r=r,
        seed=seed,
        tol=tol,
        n_saturated=n_saturated,
        lora_params=r * (d_in + d_out),
        gate_params=d_in + d_out,
    )
    return out


def plot_toy(out: dict, path):
    """Sorted eigenvalues of every toy case, symlog scale, zeros and negatives visible; returns the figure's path."""
    from pathlib import Path

    import matplotlib.pyplot as plt
    import numpy as np

    cases = [k for k in out if k != "config"]
    fig, ax = plt.subplots(figsize=(8, 3.8))
    for i, k in enumerate(cases):
        ev = np.sort(out[k]["eigenvalues"])
        ax.plot(
            np.arange(ev.size),
            ev,
            "o-",
            ms=4,
            lw=1,
            label=f"{k}: zero {out[k]['n_zero']}, negative {out[k]['n_negative']}",
        )
    ax.set_yscale("symlog", linthresh=1e-3)
    ax.axhline(0, color="k", lw=0.5)
    c = out["config"]
    ax.set_title(
        f"Toy linear model ({c['d_out']}x{c['d_in']}, N={c['n']}): Hessian eigenvalues, gates (n={c['gate_params']}) "
        f"vs LoRA r={c['r']} (n={c['lora_params']})",
        fontsize=9,
    )
    ax.set_xlabel("index (sorted)")
    ax.set_ylabel("eigenvalue (symlog)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
