"""Benchmarks (docs/design.md §5): `python -m analysis.bench` (latency.py).

latency.py     inference latency, dense vs gated vs compressed; its figure
batching.py    random vs length-bucketed batches (python -m analysis.bench.batching)
kurtosis.py    overhead of the kurtosis-weighted penalty (python -m analysis.bench.kurtosis)
hf_trainer.py  overhead of gatecore.GateTrainer vs the study runner (python -m analysis.bench.hf_trainer)
train_cost.py  training-step time and memory per method (python -m analysis.bench.train_cost)
model_steps.py each method's step time on a second model vs MiniLM (python -m analysis.bench.model_steps)
runtimes.py    eager PyTorch vs ONNX Runtime, both compression layouts (python -m analysis.bench.runtimes)
sizes.py       parameters and file sizes of the compressed layouts (python -m analysis.bench.sizes)
"""
