"""gatecore.hessian: Hessians of a model's loss over a parameter subset, and their spectra (docs/design.md §4, §11).

    op = HessianOperator(model, batches, "gates", loss_fn, noise_draws=4, dtype=torch.float64)
    rep = METHODS["lanczos"](op)            # or exact / slq / pyhessian; a frozen SpectrumReport
    rep.kappa_eff, rep.n_zero, rep.as_dict()
    report_conditioning(slq_rep, ends=lanczos_rep)   # matched-set kappas and the tolerance curve

Saturated gates give exact zero rows: `deflated("lanczos", op, saturated_mask(op))` runs on the rest;
`flat_vs_draws(model)` counts them against the number of noise draws. With the sparsity penalty in the loss
they keep the penalty's (diagonal) curvature: `deflated_values(op, mask)` gives it, `deflated(..., fill=...)`
adds it back. The shared parametrization (per unit of weight change, §11): `weight_scaled(op)` -> (D^{-1/2} H D^{-1/2}, deflated count).
"""

from .crosscheck import arpack_end, products_to_accuracy, pyhessian
from .deflate import (
    FlatCounts,
    deflated,
    deflated_values,
    flat_vs_draws,
    saturated_gates,
    saturated_mask,
    value_clusters,
)
from .measures import (
    FRACTIONS,
    TOLS,
    TOP_KS,
    Conditioning,
    MatchedKappa,
    ToleranceCurve,
    conditioning,
    density_counts,
    mass_kappa,
    report_conditioning,
    tolerance_curve,
    top_k_kappa,
)
from .operator import SUBSETS, HessianOperator, Restricted, classification_loss, force_eager, select_params
from .precondition import Scaled, weight_metric_diagonal, weight_scaled
from .spectrum import (
    ACTIVE,
    LANCZOS_TOL,
    MAX_EXACT_N,
    SLQ_COUNT_TOL,
    SLQ_PROBES,
    SLQ_STEPS,
    TOL,
    SpectrumReport,
    dense_hessian,
    exact,
    lanczos,
    lanczos_tridiag,
    planned_products,
    ritz,
    slq,
    summarize,
)

METHODS = {"exact": exact, "lanczos": lanczos, "slq": slq, "pyhessian": pyhessian}

__all__ = [
    "HessianOperator",
    "Restricted",
    "select_params",
    "force_eager",
    "classification_loss",
    "SUBSETS",
    "SpectrumReport",
    "summarize",
    "dense_hessian",
    "exact",
    "lanczos",
    "lanczos_tridiag",
    "ritz",
    "slq",
    "pyhessian",
    "products_to_accuracy",
    "arpack_end",
    "METHODS",
    "deflated",
    "deflated_values",
    "value_clusters",
    "saturated_mask",
    "saturated_gates",
    "flat_vs_draws",
    "FlatCounts",
    "Conditioning",
    "MatchedKappa",
    "ToleranceCurve",
    "conditioning",
    "top_k_kappa",
    "mass_kappa",
    "tolerance_curve",
    "density_counts",
    "report_conditioning",
    "Scaled",
    "weight_metric_diagonal",
    "weight_scaled",
    "planned_products",
    "TOLS",
    "TOP_KS",
    "FRACTIONS",
    "TOL",
    "MAX_EXACT_N",
    "LANCZOS_TOL",
    "SLQ_STEPS",
    "SLQ_PROBES",
    "SLQ_COUNT_TOL",
    "ACTIVE",
]
