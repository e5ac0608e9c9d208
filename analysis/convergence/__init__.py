"""The gate-convergence study (docs/design.md §1, §5): `python -m analysis.convergence` (study.py).

config.py    ConvergenceConfig (typed, frozen): defaults, each with its CLI help
planted.py   planted problems with a known answer; exact and Monte Carlo expected objectives
study.py     training, reference optimum F*, rates; the CLI
plots.py     figures and the summary table, from results/convergence/*.json alone
"""
