"""python -m analysis.gpu_bundle: build the offline GPU kit (analysis/finetune/gpu_bundle.py)."""
from analysis.finetune.gpu_bundle import main

if __name__ == "__main__":
    raise SystemExit(main())
