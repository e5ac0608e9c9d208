"""`python -m analysis.hessian.race`: the command line of the race (its protocol: analysis/hessian/race/__init__.py)."""

from __future__ import annotations

import argparse
import json
import sys

import analysis.hessian.race as package
from analysis.cli import add_options, from_args
from analysis.constants import FIGURES

from ..setup import PRESETS
from .config import RaceConfig
from .report import figure
from .study import run


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m analysis.hessian.race",
        description=package.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(
        ap,
        RaceConfig,
        items={"gate_lrs": float, "lora_lrs": float, "seeds": int, "thresholds": float},
        choices={"adapters": list(PRESETS), "head": ["frozen", "joint"], "pooling": ["mean", "cls"]},
    )
    return ap


def main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    cfg = from_args(RaceConfig, args)
    try:
        path = run(cfg, log=lambda s: print(s, flush=True))
    except (ValueError, FileNotFoundError) as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    import matplotlib

    matplotlib.use("Agg")
    print(f"figure: {figure(json.loads(path.read_text()), FIGURES / cfg.figure)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
