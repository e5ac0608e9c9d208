"""python -m analysis.bench: inference latency, dense vs gated vs compressed (analysis/bench/latency.py)."""

from analysis.bench.latency import main

if __name__ == "__main__":
    raise SystemExit(main())
