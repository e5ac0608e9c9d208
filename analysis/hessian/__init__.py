"""The Hessian study (docs/design.md §4, §11; issue 13): gates vs LoRA conditioning on MiniLM.

study.py     one run: HessianConfig (frozen), analyze, run; `python -m analysis.hessian`
setup.py     task examples, the adapted model and its presets (--adapters)
penalty.py   the sparsity term: as specified, or as a finetuning run trained it (--penalty as-trained)
train.py     the short training run (--train-steps)
compare.py   the gates-vs-LoRA sweep as configs; `python -m analysis.hessian.compare`
records.py   reading results/hessian/*.json: spectrum mass, labels, grouping keys
tables.py    the records' tables and the full sets' verdict (results/hessian/full_sets.md)
plots.py     figures from results/hessian/*.json (`make figures`)
toy.py       the analytic toy: closed-form Hessians, and the closed-form expected gate loss
race/        steps to a training loss, gates vs LoRA; `python -m analysis.hessian.race`
"""
