"""python -m analysis.bench_kurtosis: overhead of the kurtosis-weighted penalty (analysis/bench/kurtosis.py)."""
from analysis.bench.kurtosis import main

if __name__ == "__main__":
    raise SystemExit(main())
