"""Benchmarks (docs/design.md §5): `python -m analysis.bench` (latency.py).

    latency.py     inference latency, dense vs gated vs compressed; its figure
    batching.py    random vs length-bucketed batches (python -m analysis.bench.batching)
    kurtosis.py    overhead of the kurtosis-weighted penalty (python -m analysis.bench.kurtosis)
    hf_trainer.py  overhead of gatecore.GateTrainer vs the study runner (python -m analysis.bench.hf_trainer)
    train_cost.py  training-step time and memory per method (python -m analysis.bench.train_cost)
"""
