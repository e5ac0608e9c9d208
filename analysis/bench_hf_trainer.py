"""python -m analysis.bench_hf_trainer: overhead of gatecore.GateTrainer (analysis/bench/hf_trainer.py)."""
from analysis.bench.hf_trainer import main

if __name__ == "__main__":
    raise SystemExit(main())
