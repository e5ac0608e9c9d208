"""gatecore.hessian: Hessians of a model's loss over a parameter subset, and their spectra (docs/design.md §4).

    op = HessianOperator(model, batches, "gates", loss_fn, noise_draws=4, dtype=torch.float64)
    rep = METHODS["lanczos"](op)            # or exact / slq / pyhessian; a frozen SpectrumReport
    rep.kappa_eff, rep.n_zero, rep.as_dict()

Saturated gates give exact zero rows: `deflated("lanczos", op, saturated_mask(op))` runs on the rest.
"""
from .crosscheck import products_to_accuracy, pyhessian
from .deflate import deflated, saturated_gates, saturated_mask
from .operator import SUBSETS, HessianOperator, Restricted, classification_loss, force_eager, select_params
from .spectrum import (ACTIVE, LANCZOS_TOL, MAX_EXACT_N, SLQ_COUNT_TOL, SLQ_PROBES, SLQ_STEPS, TOL, SpectrumReport,
                       dense_hessian, exact, lanczos, lanczos_tridiag, ritz, slq, summarize)

METHODS = {"exact": exact, "lanczos": lanczos, "slq": slq, "pyhessian": pyhessian}

__all__ = [
    "HessianOperator", "Restricted", "select_params", "force_eager", "classification_loss", "SUBSETS",
    "SpectrumReport", "summarize", "dense_hessian", "exact", "lanczos", "lanczos_tridiag", "ritz", "slq",
    "pyhessian", "products_to_accuracy", "METHODS", "deflated", "saturated_mask", "saturated_gates",
    "TOL", "MAX_EXACT_N", "LANCZOS_TOL", "SLQ_STEPS", "SLQ_PROBES", "SLQ_COUNT_TOL", "ACTIVE",
]
