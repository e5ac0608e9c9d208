"""The finetuning study (docs/design.md §1-3, §5): `python -m analysis.finetune` (sweep.py).

config.py      SweepConfig (typed, frozen), run specs and run ids
sweep.py       the CLI and the sweep: plan, schedule, summary
validate.py    every option, the model and the data checked before anything runs; one-line CLI errors
runner.py      one run: grid searched on val, record, compression check
train.py       the training loop (gatecore's method setup, schedule, controller)
batching.py    random and length-bucketed batches
schedule.py    longest-first worker scheduling, one writer, resumable
protocols.py   named protocols and the dry run's time estimate
results.py, stats.py, tables.py, curves.py, figures.py   reading records; tables and figures
gpu_bundle.py, gpu_protocol.py   the offline GPU kit
hf_finetune.py the same method through the Hugging Face Trainer (gatecore.GateTrainer)
"""
