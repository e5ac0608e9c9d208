"""python -m analysis.bench_batching: random vs length-bucketed batches (analysis/bench/batching.py)."""
from analysis.bench.batching import main

if __name__ == "__main__":
    raise SystemExit(main())
