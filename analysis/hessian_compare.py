"""Kept for `python -m analysis.hessian_compare` and `from analysis import hessian_compare`: the study moved to
analysis/hessian/compare.py (sweep, tables) and analysis/hessian/plots.py (figures)."""
from analysis.hessian.compare import (CHECKPOINTS, COMMON, OUT, SETTINGS, demo, full_table, main, plan, records_table,  # noqa: F401
                                      summary_table)
from analysis.hessian.plots import label, load, make_figures, mass  # noqa: F401

if __name__ == "__main__":
    raise SystemExit(main())
