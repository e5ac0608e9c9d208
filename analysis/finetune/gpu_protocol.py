"""Run the GPU protocol (PROTOCOLS["gpu"], analysis/finetune/protocols.py) on an offline GPU host, from a bundle made
by analysis.finetune.gpu_bundle: a thin call into the sweep (analysis.finetune.sweep.run_sweep).

    cd bundle && python -m analysis.finetune.gpu_protocol --bundle . --out results_gpu --workers 12
    # back home: cp results_gpu/finetune/gpu.jsonl results/finetune/ && make figures

The protocol: SST-2, MRPC, RTE, CoLA, STS-B on their full training sets (val carved from train, dev
reported); methods full, lora, bias, head, gates at keep 0.9/0.8/0.7/0.6/0.5 (bias on), gates at 0.7
without bias; 3 seeds: 150 independent runs, in `--workers` worker processes that share the one GPU (a
22M-parameter model uses a sliver of it; starting NVIDIA MPS on the host lets their kernels overlap).
Everything else is the sweep's: its options (all of `python -m analysis.finetune`'s but --protocol, --out
and --root, e.g. --tasks RTE --seeds 0), its validation before anything runs, its scheduler (longest run
first, one writer) and its resume (a rerun does only what OUT/finetune/gpu.jsonl lacks).

From the bundle: the tasks of its manifest, GLUE from <bundle>/glue, and the model: the float16 copy is
upcast once to a float32 folder (<bundle>/.work/<model name>) and trained in float32 (no autocast). The
runs name that folder relative to the bundle (the sweep's `root` is the bundle), so run ids do not depend
on where the bundle lies, and the working directory is never changed (a relative --out is relative to it).

Time: the target is about 8 minutes on one H200. `--dry-run` prints the plan's training steps (every point
of the lr/lam grids before the grid rule extends any): 125,664 at the time of writing, so it needs ~260
steps/s over all workers (~22 per worker at 12 workers, batch 32). That rate is NOT measured: no GPU was
available when this kit was written. The progress bar prints an ETA from the steps done; if it is far
over, the levers are MPS (`nvidia-cuda-mps-control -d`), more `--workers`, `--batch-size 64`, or
`--train-examples` (a subset). `--tiny` runs two runs on a few examples (tests, or a first check on the host).

From Python: `run_bundle(bundle, bundle_config(bundle, out, workers=12))`; the overrides are SweepConfig
fields. docs/design.md §5-6.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from analysis.cli import add_options, from_args, option
from analysis.finetune.config import SweepConfig, frozen, resolve
from analysis.finetune.protocols import PROTOCOLS
from analysis.finetune.sweep import CHOICES, ITEMS, run_sweep
from analysis.finetune.validate import ArgumentParser, ConfigError, cli

PROTOCOL = "gpu"
RESULTS_NAME = "gpu.jsonl"
WORK = ".work"  # inside the bundle: the float32 copy of the model
TINY = dict(
    methods=["lora", "gates"],
    keep=[0.7],
    no_bias_keep=[],
    seeds=[0],
    epochs=1,
    train_examples=16,
    val_examples=8,
    dev_examples=16,
    max_len=32,
)  # on the bundle's first task


def upcast_model(src: Path, dst: Path) -> Path:
    """float16 safetensors -> float32 copy (exact), with config and tokenizer; reused if already there."""
    from safetensors.torch import load_file, save_file

    if (dst / "model.safetensors").is_file() and (dst / "config.json").is_file():
        return dst
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("model.safetensors"))
    state = load_file(src / "model.safetensors")
    save_file(
        {k: v.float() if v.is_floating_point() else v for k, v in state.items()},
        tmp / "model.safetensors",
        metadata={"format": "pt"},
    )
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return dst


def read_manifest(bundle: Path) -> dict:
    if not (Path(bundle) / "manifest.json").is_file():
        raise ConfigError(
            f"--bundle {bundle}: not a bundle (no manifest.json); build one with "
            "`python -m analysis.finetune.gpu_bundle --out DIR` in the repository"
        )
    return json.loads((Path(bundle) / "manifest.json").read_text())


def bundle_values(bundle: Path, out: Path, tiny: bool = False) -> dict:
    """The SweepConfig values of the GPU protocol run from `bundle` into the results folder `out`: the protocol's,
    then the bundle's tasks (tiny: its first, and TINY's values), model (relative to the bundle) and GLUE."""
    bundle = Path(bundle).resolve()
    manifest = read_manifest(bundle)
    return {
        **PROTOCOLS[PROTOCOL],
        "protocol": PROTOCOL,
        "tasks": manifest["tasks"][:1] if tiny else manifest["tasks"],
        "root": str(bundle),
        "model": f"{WORK}/{manifest['model'].get('name', 'model')}",
        "glue_dir": str(bundle / "glue"),
        "out": Path(out) / "finetune" / RESULTS_NAME,
        "checkpoint_dir": str(Path(out) / "checkpoints"),
        **(TINY if tiny else {}),
    }


def bundle_config(bundle: Path, out: Path, tiny: bool = False, **overrides) -> SweepConfig:
    """The sweep of the GPU protocol from `bundle` (bundle_values), then `overrides` (SweepConfig fields)."""
    return resolve(frozen(SweepConfig, {**bundle_values(bundle, out, tiny), **overrides}))


def check_host() -> dict:
    """Versions of what the runner imports (a ConfigError naming a missing one) and the GPU, if any."""
    import importlib

    from analysis.finetune.gpu_bundle import HOST_MODULES

    info = {}
    for name in HOST_MODULES:
        try:
            info[name] = getattr(importlib.import_module(name), "__version__", "?")
        except ImportError:
            raise ConfigError(
                f"the protocol needs the Python package {name!r}, which this host lacks; install its "
                f"wheel from the bundle: pip install --no-index --find-links wheels {name}"
            ) from None
    import torch

    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_bundle(bundle: Path, cfg: SweepConfig) -> Path:
    """Check the host, upcast the bundle's model once, run the sweep `cfg` (bundle_config); returns its results file."""
    bundle = Path(bundle).resolve()
    manifest = read_manifest(bundle)
    commit = manifest.get("versions", {}).get("gatecore_commit")
    print(f"host: {check_host()}; bundle built {manifest.get('date')} at commit {commit}")
    upcast_model(bundle / "model", bundle / cfg.model)
    note = {
        "bundle_commit": commit,
        "workers": cfg.workers,
        "weights": "float16 copy upcast to float32, trained in float32",
    }
    return run_sweep(cfg, extra={"gpu_protocol": note})


@dataclass(frozen=True)
class BundleOptions:
    """The driver's own flags; the rest of its command line is the sweep's (SweepConfig's but --protocol, --out,
    --root)."""

    bundle: Path | None = option(None, "the bundle folder made by analysis.finetune.gpu_bundle", required=True)
    out_dir: Path | None = option(
        None,
        "results folder: records go to OUT/finetune/gpu.jsonl, checkpoints to OUT/checkpoints",
        flag="--out",
        required=True,
    )
    tiny: bool = option(False, "two runs on a few examples of the bundle's first task (tests; a first check on a host)")


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(
        prog="python -m analysis.finetune.gpu_protocol",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(ap, BundleOptions)
    add_options(ap, SweepConfig, CHOICES, ITEMS, skip=("protocol", "out", "root"))
    ap.set_defaults(**PROTOCOLS[PROTOCOL])
    return ap


def parse_args(argv=None) -> tuple[Path, SweepConfig]:
    """argv -> (bundle, the resolved SweepConfig): the bundle's values are the defaults, explicit options win."""
    ap = build_parser()
    known, _ = ap.parse_known_args(argv)
    ap.set_defaults(**bundle_values(known.bundle, known.out_dir, known.tiny))
    args = ap.parse_args(argv)
    return from_args(BundleOptions, args).bundle, resolve(from_args(SweepConfig, args))


def run_command(argv) -> int:
    run_bundle(*parse_args(argv))
    return 0


def main(argv=None) -> int:
    """The command line; bad input ends in one line `error: ...` and exit status 2 (analysis/finetune/validate.py)."""
    return cli(run_command, argv)


if __name__ == "__main__":
    raise SystemExit(main())
