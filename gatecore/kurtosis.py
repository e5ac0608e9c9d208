"""Kurtosis-informed weights of the target-keep penalty (FineGates, as the authors' code computes it).

For a gated layer with frozen weight W (out x in) and its input averaged over batch and sequence,
x_bar (length in), restricted to the open rows R and open columns C (eval gate > 0):

    A_ij    = W_ij * x_bar_j                                   i in R, j in C
    z       = (a - mean(a)) / std(a)    population std (ddof 0); a zero-variance vector gives z = 0
    kappa   = sqrt(mean(z^4))           square root of Pearson's kurtosis m4 / m2^2
    kappa_c[j] = kappa of the column A[R, j];   kappa_r[i] = kappa of the row A[i, C]
    w_c     = softmax(-kappa_c / tau) over C;   w_r = softmax(-kappa_r / tau) over R

Channels whose contributions are not heavy-tailed (small kappa) get more weight, so more of the
penalty, and close first; outlier-heavy channels are protected. tau -> infinity gives uniform
weights 1/|R| and 1/|C|.

Worth knowing: z-scores ignore the scale (and sign) of a column, so kappa_c[j] is the kurtosis of
W[R, j] alone, whatever x_bar_j is, except that x_bar_j = 0 makes the column constant (kappa 0,
the largest weight); only kappa_r depends on the data. With kappa of order 1-10 and tau = 100
the weights stay within tens of percent of uniform.

Everything here is a pure function without gradient. Vectors come back full length: closed
positions hold kappa = 0 and w = 0 (the weights of the open positions sum to 1).
"""

from __future__ import annotations

import math
import numbers

import torch

DEFAULT_TAU = 100.0
_CONST_REL = 64.0  # a vector whose spread is within 64 ulps of its magnitude is rounding noise: zero variance


def check_tau(tau) -> float:
    """tau must be a positive finite real number (not a bool)."""
    if isinstance(tau, bool) or not isinstance(tau, numbers.Real) or not math.isfinite(tau) or tau <= 0:
        raise ValueError(f"kurtosis_tau must be a positive finite number, got {tau!r}")
    return float(tau)


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    # fourth powers in half precision lose everything: compute in at least float32
    return torch.promote_types(dtype, torch.float32)


@torch.no_grad()
def sqrt_kurtosis(a: torch.Tensor, dim: int, mask: torch.Tensor | None = None, overwrite: bool = False) -> torch.Tensor:
    """sqrt(mean(z^4)) of each row (dim=1) or column (dim=0) of a matrix, over the entries where `mask` is true.

    z are the population z-scores of the included entries. Computed as sqrt(m4) / m2 with central
    moments m_k = mean((a - mean a)^k), which equals sqrt(mean(z^4)) without forming z. The variance
    counts as 0 (and kappa as 0) when the spread is within rounding of the values' magnitude
    (std <= 64 eps rms), so a constant vector gives 0 rather than noise divided by noise; so does a
    vector of one or no included entries. Masked sums are matrix-vector products with the 0/1
    mask: no copy of the open part, no data-dependent shapes (no host-device sync on a GPU).
    `overwrite=True` lets it use `a` itself as scratch (saves one matrix-sized allocation).
    """
    if a.dim() != 2 or dim not in (0, 1):
        raise ValueError(f"sqrt_kurtosis takes a matrix and dim 0 or 1, got shape {tuple(a.shape)} and dim={dim!r}")
    a = a.to(_stat_dtype(a.dtype))
    at = a if dim == 1 else a.T  # reduce along the last dim of `at`
    m = torch.ones(at.shape[1], dtype=a.dtype, device=a.device) if mask is None else mask.to(a.dtype)
    n = m.sum().clamp(min=1)
    mean = at @ m / n
    # squares in place: each pass over an (out x in) matrix, and each allocation of one, costs
    d = (at.sub_(mean[:, None]) if overwrite else at - mean[:, None]).square_()
    m2 = d @ m / n
    m4 = d.square_() @ m / n
    rms = (m2 + mean.square()).sqrt()
    const = m2.sqrt() <= _CONST_REL * torch.finfo(a.dtype).eps * rms
    return torch.where(const, torch.zeros_like(m2), m4.sqrt() / torch.where(const, torch.ones_like(m2), m2))


@torch.no_grad()
def channel_kurtosis(
    weight: torch.Tensor, x_bar: torch.Tensor, open_rows: torch.Tensor, open_cols: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(kappa_r, kappa_c): lengths out and in, 0 at closed positions.

    `open_rows`, `open_cols` are boolean masks (eval gate > 0).
    """
    out_f, in_f = weight.shape
    if x_bar.shape != (in_f,) or open_rows.shape != (out_f,) or open_cols.shape != (in_f,):
        raise ValueError(
            f"shapes do not fit a weight of {tuple(weight.shape)}: x_bar {tuple(x_bar.shape)}, "
            f"open_rows {tuple(open_rows.shape)}, open_cols {tuple(open_cols.shape)}"
        )
    dt = _stat_dtype(weight.dtype)
    rows, cols = open_rows.to(dt), open_cols.to(dt)
    a = weight.detach().to(dt) * x_bar.detach().to(dt)  # A_ij = W_ij x_bar_j
    kappa_c = sqrt_kurtosis(a, 0, rows) * cols  # column j over the open rows
    kappa_r = sqrt_kurtosis(a, 1, cols, overwrite=True) * rows  # row i over the open columns; a is ours, last use
    return kappa_r, kappa_c


@torch.no_grad()
def masked_softmax_weights(kappa: torch.Tensor, open_mask: torch.Tensor, tau: float) -> torch.Tensor:
    """softmax(-kappa / tau) over the open positions, 0 elsewhere (all 0 when none is open)."""
    tau = check_tau(tau)
    open_mask = open_mask.bool()
    w = torch.softmax((-kappa / tau).masked_fill(~open_mask, -math.inf), dim=0)
    return torch.where(open_mask, w, torch.zeros_like(w))  # none open: softmax of all -inf is nan


@torch.no_grad()
def channel_weights(
    weight: torch.Tensor,
    x_bar: torch.Tensor,
    open_rows: torch.Tensor,
    open_cols: torch.Tensor,
    tau: float = DEFAULT_TAU,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(w_r, w_c) = softmax(-kappa / tau) over the open rows / columns; 0 at closed positions."""
    tau = check_tau(tau)
    kappa_r, kappa_c = channel_kurtosis(weight, x_bar, open_rows, open_cols)
    return masked_softmax_weights(kappa_r, open_rows, tau), masked_softmax_weights(kappa_c, open_cols, tau)
