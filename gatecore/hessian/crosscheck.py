"""pyhessian 0.1 (the declared cross-check, docs/design.md §4), wrapped for torch 2, not vendored.

Its PyPI release calls the removed `torch.eig` in `density()` and its `trace()` stops early for a
non-positive trace; `pyhessian` here restores a symmetric `torch.eig` for the call, draws its random
vectors in the operator's dtype, counts its products, and runs the trace for a fixed number of probes.
`products_to_accuracy` compares its power iteration with the Lanczos the CLI runs (ARPACK eigsh, one
end at a time, as `spectrum.lanczos`), product for product, and with plain Lanczos for reference.

Power iteration finds the eigenvalue of largest |lambda|: that is lambda_max when it is positive and
lambda_min when it is negative; the report fills the one end it found and leaves the other None.
"""

from __future__ import annotations

import contextlib
import importlib
import time
import warnings

import numpy as np
import torch

from .spectrum import LANCZOS_TOL, SLQ_STEPS, TOL, SpectrumReport, as_linear_operator, lanczos, lanczos_tridiag, ritz


class LossModule(torch.nn.Module):
    """What pyhessian expects: model(inputs) -> outputs, criterion(outputs, targets) -> loss."""

    def __init__(self, op):
        super().__init__()
        self.inner, self.op = op.model, op

    def forward(self, _inputs):
        return self.op.loss()


def _eig_for_symmetric(T, eigenvectors=False):
    """The removed torch.eig, for the symmetric tridiagonal T that density() builds."""
    vals, vecs = torch.linalg.eigh(T)
    return torch.stack([vals, torch.zeros_like(vals)], 1), vecs


@contextlib.contextmanager
def _pyhessian_session(op, seed: int):
    """pyhessian on torch 2: restore torch.eig, make its random vectors op.dtype, count its products."""
    ph = importlib.import_module("pyhessian.hessian")  # the module: the package re-exports a class of that name
    counted, orig_hvp, orig_dtype = [0], ph.hessian_vector_product, torch.get_default_dtype()
    had_eig, orig_eig = hasattr(torch, "eig"), getattr(torch, "eig", None)

    rayleigh = []

    def counting_hvp(gradsH, params, v):
        counted[0] += 1
        hv = orig_hvp(gradsH, params, v)
        rayleigh.append(float(sum((x * y).sum() for x, y in zip(v, hv)) / sum((x * x).sum() for x in v)))
        return hv

    for p in op.params:
        p.grad = None
    ph.hessian_vector_product, torch.eig = counting_hvp, _eig_for_symmetric
    torch.set_default_dtype(op.dtype)
    torch.manual_seed(seed)
    try:
        warnings.filterwarnings("ignore", message="Using backward.. with create_graph=True")  # pyhessian's own call
        yield (
            ph.hessian(LossModule(op), lambda out, _t: out, data=(None, None), cuda=op.device.type == "cuda"),
            counted,
            rayleigh,
        )
    finally:
        ph.hessian_vector_product = orig_hvp
        torch.set_default_dtype(orig_dtype)
        if had_eig:
            torch.eig = orig_eig
        else:
            del torch.eig
        for p in op.params:
            p.grad = None  # pyhessian left a gradient that holds the whole double-backward graph
        op.products += counted[0]


def pyhessian(
    op,
    tol: float = TOL,
    power_tol: float = 1e-3,
    max_iter: int = 100,
    trace_probes: int = 20,
    density_steps: int = SLQ_STEPS,
    density_probes: int = 1,
    seed: int = 0,
) -> SpectrumReport:
    """Top |eigenvalue| by pyhessian's power iteration, trace by Hutchinson (a fixed number of probes:
    its own stopping rule divides by the running trace and stops at once when that is negative),
    density by its SLQ with torch.eig restored."""
    t = time.perf_counter()
    with _pyhessian_session(op, seed) as (h, counted, _):
        (top,), _ = h.eigenvalues(maxIter=max_iter, tol=power_tol)
        power_products = counted[0]
        vhv = h.trace(maxIter=trace_probes, tol=-np.inf)  # tol=-inf: never stops early
        nodes, weights = h.density(iter=min(density_steps, op.n), n_v=density_probes)
    vhv = np.asarray(vhv, dtype=np.float64)
    top = float(top)
    return SpectrumReport(
        op.n,
        "pyhessian",
        counted[0],
        time.perf_counter() - t,
        lambda_max=top if top >= 0 else None,
        lambda_min=top if top < 0 else None,
        tol=tol,
        trace=float(vhv.mean()),
        trace_stderr=float(vhv.std(ddof=1) / np.sqrt(vhv.size)) if vhv.size > 1 else None,
        extra={
            "largest_magnitude": top,
            "top_is": "largest |eigenvalue| (power iteration): lambda_max if positive, lambda_min if negative",
            "power_products": power_products,
            "power_tol": power_tol,
            "trace_probes": int(vhv.size),
        },
        density={"nodes": [list(map(float, x)) for x in nodes], "weights": [list(map(float, x)) for x in weights]},
    )


def arpack_end(op, reference: float, eig_tol: float, seed: int = 0, ncv: int = 20) -> tuple[int, float]:
    """(products, relative error) of one ARPACK eigsh run for the end holding `reference`, as spectrum.lanczos runs it."""
    from scipy.sparse.linalg import eigsh

    p0 = op.products
    v0 = np.random.default_rng(seed).standard_normal(op.n)
    val = float(
        eigsh(
            as_linear_operator(op),
            k=1,
            which="LA" if reference >= 0 else "SA",
            tol=eig_tol,
            v0=v0,
            ncv=min(ncv, op.n - 1),
            return_eigenvectors=False,
        )[0]
    )
    return op.products - p0, abs(val - reference) / abs(reference)


def products_to_accuracy(
    op, reference: float, eps=(1e-2, 1e-3, 1e-4, 1e-6), max_steps: int = 100, seed: int = 0
) -> dict:
    """Products until the end of largest magnitude (`reference`) is within a relative `eps`:
    pyhessian's power iteration (its Rayleigh quotient after each product, read through the counting hook)
    vs ARPACK eigsh with tol=eps (the algorithm `spectrum.lanczos` runs; its achieved error recorded) and vs
    plain Lanczos (top Ritz value after each step); plus pyhessian as shipped (its own stopping rule, tol 1e-3)
    and the products of the CLI's `lanczos` (both ends at LANCZOS_TOL)."""
    a, b = lanczos_tridiag(op, np.random.default_rng(seed).standard_normal(op.n), max_steps)
    ends = [ritz(a[:m], b[: m - 1])[0] for m in range(1, a.size + 1)]
    lz = [abs((t.max() if reference >= 0 else t.min()) - reference) / abs(reference) for t in ends]
    with _pyhessian_session(op, seed) as (h, counted, rq):
        h.eigenvalues(maxIter=max_steps, tol=-np.inf)  # tol=-inf: every iteration, no early stop
    pw = [abs(x - reference) / abs(reference) for x in rq]
    with _pyhessian_session(op, seed) as (h, counted, _):
        (top,), _ = h.eigenvalues(maxIter=max_steps, tol=1e-3)
    first = lambda errs, e: next((k + 1 for k, x in enumerate(errs) if x <= e), None)  # noqa: E731
    rows = []
    for e in eps:
        ap, aerr = arpack_end(op, reference, e, seed)
        rows.append(
            {
                "eps": e,
                "power_products": first(pw, e),
                "arpack_products": ap,
                "arpack_rel_err": aerr,
                "lanczos_plain_products": first(lz, e),
            }
        )
        rows[-1]["ratio"] = ap / rows[-1]["power_products"] if rows[-1]["power_products"] else None
    shipped_err = abs(top - reference) / abs(reference)
    p0 = op.products
    lanczos(op, progress=False, seed=seed)
    return {
        "reference": reference,
        "max_steps": max_steps,
        "rows": rows,
        "ratio_is": "ARPACK eigsh products / power-iteration products to the same relative error",
        "cli_lanczos_products_both_ends": op.products - p0,
        "cli_lanczos_eig_tol": LANCZOS_TOL,
        "pyhessian_default": {
            "tol": 1e-3,
            "products": counted[0],
            "rel_err": shipped_err,
            "lanczos_plain_products_same_err": first(lz, shipped_err),
        },
    }
