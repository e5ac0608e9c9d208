"""Hessian spectra from an operator with `n`, `matvec`, `matmat`, `products` (gatecore.hessian.operator),
as in docs/design.md §4.

    exact:     H assembled column block by column block, symmetry checked, eigvalsh (all n eigenvalues)
    lanczos:   scipy eigsh on a LinearOperator, largest and smallest algebraic eigenvalue
    slq:       stochastic Lanczos quadrature (Ubaru, Chen, Saad 2017; Ghorbani et al. 2019) density
    (pyhessian, the cross-check, is in gatecore.hessian.crosscheck)

Conditioning is reported on the active subspace: eigenvalues above tol * lambda_max.
Exact zeros (saturated gates, LoRA symmetry directions) and negative curvature are
counted, never divided by: kappa_eff = lambda_max / min{lambda : lambda > tol * lambda_max}.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

MAX_EXACT_N = 20_000  # dense float64 H of 2e4 x 2e4 is 3.2 GB: the most this machine holds twice
TOL = 1e-6  # zero / active threshold, relative to max |lambda|
LANCZOS_TOL = 1e-6  # eigsh relative accuracy
SLQ_STEPS, SLQ_PROBES = 40, 4
SLQ_COUNT_TOL = 1e-3  # SLQ zero / negative counts: |node| <= this * max|node| is zero
ACTIVE = "eigenvalues above tol * lambda_max (exact zeros and negative curvature excluded)"


@dataclass(frozen=True)
class SpectrumReport:
    """One spectrum of one operator. `eigenvalues` (exact) / `density` (SLQ nodes and weights) stay out of
    as_dict(): the CLI writes them beside the report, under their own keys of the results file.
    Frozen: a changed report is a new one (`dataclasses.replace`)."""

    n: int
    method: str
    products: int
    wall_s: float
    lambda_max: float | None
    lambda_min: float | None
    n_negative: float | None = None  # exact: counted; slq: estimated n * mass (see counts_estimated)
    n_zero: float | None = None
    tol: float = TOL
    kappa_eff: float | None = None
    active: str = ACTIVE
    n_active: float | None = None
    trace: float | None = None
    trace_stderr: float | None = None
    counts_estimated: bool = False
    extra: dict = field(default_factory=dict)
    eigenvalues: np.ndarray | None = field(default=None, repr=False)
    density: dict | None = field(default=None, repr=False)  # {"nodes": [probe][m], "weights": [probe][m]}

    def as_dict(self) -> dict:
        d = asdict(self)
        d.pop("eigenvalues"), d.pop("density")
        return d


def summarize(evals: np.ndarray, tol: float = TOL) -> dict:
    """Counts and kappa_eff of a full (or Ritz-weighted) spectrum; zero means |lambda| <= tol * max|lambda|."""
    evals = np.asarray(evals, dtype=np.float64)
    scale = float(np.abs(evals).max()) if evals.size else 0.0
    lmax, lmin = float(evals.max()), float(evals.min())
    active = evals[evals > tol * lmax] if lmax > 0 else evals[:0]
    return dict(
        lambda_max=lmax,
        lambda_min=lmin,
        n_negative=int((evals < -tol * scale).sum()),
        n_zero=int((np.abs(evals) <= tol * scale).sum()),
        n_active=int(active.size),
        kappa_eff=float(lmax / active.min()) if active.size else None,
        trace=float(evals.sum()),
    )


def planned_products(method: str, n: int, steps: int = SLQ_STEPS, probes: int = SLQ_PROBES, ncv: int = 20) -> int:
    """A planning estimate of the products a method spends (for the expected-duration print): exact n;
    slq steps * probes; lanczos ~2 ncv per end (ARPACK used 42-62 for both ends on MiniLM, more when the
    ends cluster); pyhessian 100 power steps at most + 20 trace probes + steps."""
    return {"exact": n, "slq": min(steps, n) * probes, "lanczos": 4 * ncv, "pyhessian": 120 + steps}[method]


def dense_hessian(op, chunk: int = 64, progress: bool = True) -> tuple[torch.Tensor, float]:
    """(H, relative asymmetry max|H - H^T| / max|H|) from n products in blocks of `chunk`."""
    n = op.n
    H = torch.empty(n, n, dtype=torch.float64)
    for j in tqdm(range(0, n, chunk), desc=f"exact H ({n}x{n})", disable=not progress, leave=False):
        k = min(chunk, n - j)
        E = torch.zeros(n, k, dtype=op.dtype, device=op.device)
        E[torch.arange(j, j + k), torch.arange(k)] = 1.0
        H[:, j : j + k] = op.matmat(E).double().cpu()
    scale = H.abs().max().item()
    asym = (H - H.T).abs().max().item() / scale if scale > 0 else 0.0
    return H, asym


def exact(op, tol: float = TOL, max_n: int = MAX_EXACT_N, chunk: int = 64, progress: bool = True) -> SpectrumReport:
    if op.n > max_n:
        raise ValueError(
            f"exact needs a dense {op.n}x{op.n} Hessian but max_n={max_n}; "
            "use --spectrum lanczos/slq, fewer parameters, or raise --max-exact-n"
        )
    t, p0 = time.perf_counter(), op.products
    H, asym = dense_hessian(op, chunk, progress)
    evals = torch.linalg.eigvalsh((H + H.T) / 2).numpy()
    s = summarize(evals, tol)
    return SpectrumReport(
        op.n,
        "exact",
        op.products - p0,
        time.perf_counter() - t,
        tol=tol,
        eigenvalues=evals,
        extra={"asymmetry": asym},
        **s,
    )


def as_linear_operator(op, progress=None):
    """`op` (n x n, products through op.matvec) as a float64 scipy LinearOperator for ARPACK; `progress` counts Hv."""
    from scipy.sparse.linalg import LinearOperator

    def mv(v):
        if progress is not None:
            progress.update(1)
        return op.matvec(np.ascontiguousarray(v, dtype=np.float64).ravel()).double().cpu().numpy()

    return LinearOperator((op.n, op.n), matvec=mv, dtype=np.float64)


def lanczos(
    op, tol: float = TOL, eig_tol: float = LANCZOS_TOL, seed: int = 0, ncv: int = 20, progress: bool = True
) -> SpectrumReport:
    """Both algebraic ends by implicitly restarted Lanczos (ARPACK); counts unknown -> None."""
    from scipy.sparse.linalg import eigsh

    t, p0 = time.perf_counter(), op.products
    v0 = np.random.default_rng(seed).standard_normal(op.n)
    with tqdm(desc=f"lanczos (n={op.n})", disable=not progress, leave=False, unit="Hv") as bar:
        A = as_linear_operator(op, bar)
        ends = {
            w: float(eigsh(A, k=1, which=w, tol=eig_tol, v0=v0, ncv=min(ncv, op.n - 1), return_eigenvectors=False)[0])
            for w in ("LA", "SA")
        }
    lmax, lmin = ends["LA"], ends["SA"]
    kappa = lmax / lmin if lmax > 0 and lmin > tol * lmax else None  # positive definite: the ends suffice
    return SpectrumReport(
        op.n,
        "lanczos",
        op.products - p0,
        time.perf_counter() - t,
        lmax,
        lmin,
        tol=tol,
        kappa_eff=kappa,
        extra={"eig_tol": eig_tol, "ncv": ncv},
    )


def lanczos_tridiag(op, v: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, beta) of `steps` Lanczos steps from v with full reorthogonalisation."""
    steps = min(steps, op.n)
    Q = np.zeros((steps, op.n))
    alpha, beta = np.zeros(steps), np.zeros(max(steps - 1, 0))
    q = v / np.linalg.norm(v)
    for i in range(steps):
        Q[i] = q
        w = op.matvec(q).double().cpu().numpy()
        alpha[i] = q @ w
        w -= Q[: i + 1].T @ (Q[: i + 1] @ w)
        w -= Q[: i + 1].T @ (Q[: i + 1] @ w)  # twice is enough (Kahan)
        if i + 1 == steps:
            break
        beta[i] = np.linalg.norm(w)
        if beta[i] <= 1e-12 * max(1.0, abs(alpha[i])):  # invariant subspace found: T is exact
            return alpha[: i + 1], beta[:i]
        q = w / beta[i]
    return alpha, beta


def ritz(alpha: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (eigenvalues of T) and Gauss weights (first components squared)."""
    from scipy.linalg import eigh_tridiagonal

    if alpha.size == 1:
        return alpha.copy(), np.ones(1)
    nodes, vecs = eigh_tridiagonal(alpha, beta)
    return nodes, vecs[0] ** 2


def slq(
    op,
    tol: float = TOL,
    steps: int = SLQ_STEPS,
    probes: int = SLQ_PROBES,
    seed: int = 0,
    count_tol: float = SLQ_COUNT_TOL,
    progress: bool = True,
) -> SpectrumReport:
    """Density as Ritz nodes/weights per Rademacher probe; counts are n * estimated mass, with zero meaning
    |node| <= count_tol * max|node|: a Gauss node stands for a cluster, it lands near 0, not within 1e-6 of it."""
    t, p0 = time.perf_counter(), op.products
    rng = np.random.default_rng(seed)
    nodes, weights, traces = [], [], []
    for _ in tqdm(range(probes), desc=f"slq (n={op.n})", disable=not progress, leave=False):
        v = rng.choice([-1.0, 1.0], op.n)
        a, b = lanczos_tridiag(op, v, steps)
        th, w = ritz(a, b)
        nodes.append(th), weights.append(w), traces.append(op.n * float(w @ th))
    allw, alln = np.concatenate(weights) / probes, np.concatenate(nodes)
    lmax, lmin = float(alln.max()), float(alln.min())
    scale = max(abs(lmax), abs(lmin))
    active = alln > tol * lmax if lmax > 0 else np.zeros_like(alln, bool)
    return SpectrumReport(
        op.n,
        "slq",
        op.products - p0,
        time.perf_counter() - t,
        lmax,
        lmin,
        n_negative=op.n * float(allw[alln < -count_tol * scale].sum()),
        n_zero=op.n * float(allw[np.abs(alln) <= count_tol * scale].sum()),
        n_active=op.n * float(allw[active].sum()),
        tol=tol,
        kappa_eff=None,
        trace=float(np.mean(traces)),
        trace_stderr=float(np.std(traces, ddof=1) / np.sqrt(probes)) if probes > 1 else None,
        counts_estimated=True,
        extra={"steps": steps, "probes": probes, "count_tol": count_tol},
        density={"nodes": [x.tolist() for x in nodes], "weights": [x.tolist() for x in weights]},
    )
