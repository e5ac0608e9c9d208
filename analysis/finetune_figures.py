"""python -m analysis.finetune_figures: the finetuning tables and figures (analysis/finetune/figures.py)."""
from analysis.finetune.figures import main

if __name__ == "__main__":
    raise SystemExit(main())
