"""Benchmarks (docs/design.md §5): `python -m analysis.bench` (latency.py).

    latency.py     inference latency, dense vs gated vs compressed; its figure
    batching.py    random vs length-bucketed batches (python -m analysis.bench_batching)
    kurtosis.py    overhead of the kurtosis-weighted penalty (python -m analysis.bench_kurtosis)
    hf_trainer.py  overhead of gatecore.GateTrainer vs the study runner (python -m analysis.bench_hf_trainer)
    model_steps.py each method's step time on a second model vs MiniLM (python -m analysis.bench_model_steps)

The training-cost benchmark is analysis/bench_train.py (python -m analysis.bench_train).
"""
