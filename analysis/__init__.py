"""The studies, grouped by study, each a thin client of gatecore with a typed config (docs/design.md §5).

    finetune/      python -m analysis.finetune      GLUE finetuning sweeps, protocols, tables, figures, GPU kit
    convergence/   python -m analysis.convergence   planted problems: does the gate process converge?
    bench/         python -m analysis.bench         latency of dense vs gated vs compressed; other benchmarks
    hessian*.py    python -m analysis.hessian, analysis.hessian_compare   Hessian spectra, gates vs LoRA
    bench_train.py python -m analysis.bench_train   training cost per method
    data.py, data_files.py, metrics.py, provenance.py   shared: tasks, their checked files, metrics, provenance
    figures.py     python -m analysis.figures       every figure from results/ (make figures)
    notebooks.py   python -m analysis.notebooks     execute the notebooks (make notebooks)

The other top-level modules are entry points kept from the flat layout, each calling one tool's `main`:
gpu_bundle, gpu_protocol, hf_finetune, finetune_figures (analysis/finetune/), bench_batching,
bench_kurtosis, bench_hf_trainer (analysis/bench/). Every run stays offline unless told otherwise.
"""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
