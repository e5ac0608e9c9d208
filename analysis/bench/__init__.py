"""Benchmarks (docs/design.md §5): `python -m analysis.bench` (latency.py).

    latency.py     inference latency, dense vs gated vs compressed; its figure
    batching.py    random vs length-bucketed batches (python -m analysis.bench_batching)
    kurtosis.py    overhead of the kurtosis-weighted penalty (python -m analysis.bench_kurtosis)
    hf_trainer.py  overhead of gatecore.GateTrainer vs the study runner (python -m analysis.bench_hf_trainer)

The training-cost benchmark is analysis/bench_train.py (python -m analysis.bench_train).
"""
