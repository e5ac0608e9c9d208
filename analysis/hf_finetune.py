"""python -m analysis.hf_finetune: finetune through the HF Trainer (analysis/finetune/hf_finetune.py)."""
from analysis.finetune.hf_finetune import main

if __name__ == "__main__":
    raise SystemExit(main())
