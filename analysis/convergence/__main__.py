"""python -m analysis.convergence: the gate-convergence study (analysis/convergence/study.py)."""

from analysis.convergence.study import main

if __name__ == "__main__":
    raise SystemExit(main())
