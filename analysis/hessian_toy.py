"""Kept for `from analysis import hessian_toy`: the analytic toy moved to analysis/hessian/toy.py."""
from analysis.hessian.toy import *  # noqa: F401,F403
from analysis.hessian.toy import RANK, ToyProblem  # noqa: F401
