"""python -m analysis.finetune: the finetuning sweep (analysis/finetune/sweep.py)."""

from analysis.finetune.sweep import main

if __name__ == "__main__":
    raise SystemExit(main())
