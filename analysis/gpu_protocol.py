"""python -m analysis.gpu_protocol: the protocol on an offline GPU host (analysis/finetune/gpu_protocol.py)."""
from analysis.finetune.gpu_protocol import main

if __name__ == "__main__":
    raise SystemExit(main())
