"""python -m analysis.bench_model_steps: each method's step time on a second model vs MiniLM (analysis/bench/model_steps.py)."""
from analysis.bench.model_steps import main

if __name__ == "__main__":
    raise SystemExit(main())
