"""The studies, grouped by study, each a thin client of gatecore with a typed config (docs/design.md §5).
Every part runs as `python -m analysis.<study>[.<part>]`.

    finetune/      python -m analysis.finetune      GLUE finetuning sweeps, protocols, tables, figures, GPU kit
    convergence/   python -m analysis.convergence   planted problems: does the gate process converge?
    hessian/       python -m analysis.hessian       Hessian spectra, gates vs LoRA (.compare: the sweep; .race)
    bench/         python -m analysis.bench         latency of dense vs gated vs compressed; other benchmarks
    constants.py   what the studies share: paths (results/<study>/), tasks, method order, repo_path
    data.py, data_files.py, metrics.py, provenance.py   shared: tasks, their checked files, metrics, what every results file records
    figures.py     python -m analysis.figures       every figure from results/ (make figures)
    notebooks.py   python -m analysis.notebooks     execute the notebooks (make notebooks)

Every run stays offline unless told otherwise.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
