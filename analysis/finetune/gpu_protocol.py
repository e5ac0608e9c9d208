"""Run the whole finetuning protocol on an offline GPU host, from a bundle made by analysis.finetune.gpu_bundle.

    cd bundle && python -m analysis.finetune.gpu_protocol --bundle . --out results_gpu --workers 12
    # back home: cp results_gpu/finetune/gpu.jsonl results/finetune/ && make figures

The protocol: SST-2, MRPC, RTE, CoLA, STS-B on their full training sets (val carved from train, dev
reported); methods full, lora, bias, head, gates at keep 0.9/0.8/0.7/0.6/0.5 (bias on), gates at 0.7
without bias; 3 seeds: 150 independent runs. Each run is one call of the runner's `run_one`
(analysis/finetune/runner.py; the sweep's defaults for lr, gate lr, lam, objective, sigma), in one of `--workers` worker
processes that share the one GPU (a 22M-parameter model uses a sliver of it; starting NVIDIA MPS on the
host lets their kernels overlap), scheduled by analysis.finetune.schedule exactly as `analysis.finetune --workers`
schedules them on the CPU: the longest runs start first, only this driver writes the results file, one
record per finished run, so a killed driver loses only the runs in flight and a rerun does only what is
missing. The float16 model copy of the bundle is upcast once to a float32 folder
(<bundle>/.work/<model name>) and trained in float32 (no autocast).

Time: the target is about 8 minutes on one H200. `--dry-run` prints the plan's training steps (every point
of the runner's lr/lam grids; full finetuning counted x1.5): ~1.4e5 with the grids of the time of writing,
so it needs ~290 steps/s over all workers (~24 per worker at 12 workers, batch 32). That rate is NOT
measured: no GPU was available when
this kit was written. The progress bar prints an ETA from the steps done; if it is far over, the levers are
MPS (`nvidia-cuda-mps-control -d`), more `--workers`, `--batch-size 64`, or `--train-examples` (a subset).
`--tiny` runs two runs on a few examples (tests, or a first check on the host).

From Python: `run_protocol(GPUProtocolConfig(bundle=..., out=...))`; each task's share of the protocol is a
`SweepConfig` (`sweep_config`), built directly, never through argv. docs/design.md §5-6.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from analysis.constants import GLUE_TASKS
from analysis.finetune.config import SweepConfig, expand, frozen, resolve, run_id
from analysis.finetune.protocols import run_cost

METHODS = ("full", "lora", "bias", "head", "gates")
KEEPS = (0.9, 0.8, 0.7, 0.6, 0.5)       # gates with bias training
NO_BIAS_KEEPS = (0.7,)                  # gates without bias training (is it the gates or the biases?)
SEEDS = (0, 1, 2)
EPOCHS = {"SST-2": 1}                   # 67k examples: one epoch; the small tasks get DEFAULT_EPOCHS
DEFAULT_EPOCHS = 3
BATCH_SIZE, MAX_LEN = 32, 128
WORKERS = 12
TINY = dict(tasks=None, methods=("lora", "gates"), keeps=(0.7,), no_bias_keeps=(), seeds=(0,), epochs=1,
            train_examples=16, val_examples=8, dev_examples=16, max_len=32)  # tasks=None: the bundle's first
RESULTS_NAME = "gpu.jsonl"


@dataclass(frozen=True)
class GPUProtocolConfig:
    """The protocol plan; see the CLI help for each field."""
    bundle: Path
    out: Path
    workers: int = WORKERS
    device: str = "cuda"
    threads: int = 1
    tasks: tuple | None = None          # None: the bundle's tasks (tiny: its first)
    methods: tuple = METHODS
    keeps: tuple = KEEPS
    no_bias_keeps: tuple = NO_BIAS_KEEPS
    seeds: tuple = SEEDS
    epochs: int | None = None           # None: EPOCHS per task, else DEFAULT_EPOCHS
    batch_size: int = BATCH_SIZE
    max_len: int = MAX_LEN
    train_examples: int | None = None
    val_examples: int | None = None
    dev_examples: int | None = None
    bench: bool = True
    tiny: bool = False                  # two runs on a few examples of one task: TINY's values win
    dry_run: bool = False


def upcast_model(src: Path, dst: Path) -> Path:
    """float16 safetensors -> float32 copy (exact), with config and tokenizer; reused if already there."""
    from safetensors.torch import load_file, save_file
    if (dst / "model.safetensors").is_file() and (dst / "config.json").is_file():
        return dst
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("model.safetensors"))
    state = load_file(src / "model.safetensors")
    save_file({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, tmp / "model.safetensors",
              metadata={"format": "pt"})
    shutil.rmtree(dst, ignore_errors=True)
    os.replace(tmp, dst)
    return dst


def resolved(protocol: GPUProtocolConfig, bundle: Path) -> GPUProtocolConfig:
    """TINY's values when tiny (tasks given still win), and the bundle's tasks when none are given."""
    if protocol.tiny:
        protocol = replace(protocol, **{k: v for k, v in TINY.items() if k != "tasks" or protocol.tasks is None})
    if protocol.tasks is None:
        tasks = json.loads((bundle / "manifest.json").read_text())["tasks"]
        protocol = replace(protocol, tasks=tuple(tasks[:1] if protocol.tiny else tasks))
    return protocol


def sweep_config(protocol: GPUProtocolConfig, task: str, model_dir: Path, out_file: Path, bundle: Path) -> SweepConfig:
    """One task's share of the protocol as the runner's config (the sweep's defaults for everything else)."""
    return resolve(frozen(SweepConfig, dict(
        model=str(model_dir), tasks=(task,), methods=protocol.methods, seeds=protocol.seeds, keep=protocol.keeps,
        no_bias_keep=protocol.no_bias_keeps, epochs=protocol.epochs or EPOCHS.get(task, DEFAULT_EPOCHS),
        batch_size=protocol.batch_size, max_len=protocol.max_len, glue_dir=str(bundle / "glue"), out=out_file,
        checkpoint_dir=str(out_file.parent.parent / "checkpoints"), device=protocol.device, threads=protocol.threads,
        train_examples=protocol.train_examples, val_examples=protocol.val_examples,
        dev_examples=protocol.dev_examples, bench=protocol.bench, quiet=True)))


def plan(protocol: GPUProtocolConfig, model_dir: Path, out_file: Path, bundle: Path) -> list[tuple]:
    """(run_id, spec, runner SweepConfig) of every run, longest first."""
    protocol = resolved(protocol, bundle)
    runs = []
    for task in protocol.tasks:
        cfg = sweep_config(protocol, task, model_dir, out_file, bundle)
        runs += [(run_id(spec), spec, cfg) for spec in expand(cfg)]
    n_train = {t: _train_size(bundle / "glue", t, protocol.train_examples) for t in protocol.tasks}
    return sorted(runs, key=lambda r: run_cost(r[1], n_train[r[1]["task"]]), reverse=True)


def _train_size(glue: Path, task: str, cap) -> int:
    """Lines of train.tsv (only to order the runs; an unknown folder counts 1)."""
    if not (glue / task / "train.tsv").is_file():
        return 1
    with open(glue / task / "train.tsv", encoding="utf-8") as f:
        n = sum(1 for _ in f)
    return min(n, cap) if cap else n


def check_host(device: str) -> dict:
    """Versions of what the runner imports; a clear error when a module or the GPU is missing."""
    import importlib
    from analysis.finetune.gpu_bundle import HOST_MODULES
    info = {}
    for name in HOST_MODULES:
        try:
            info[name] = getattr(importlib.import_module(name), "__version__", "?")
        except ImportError:
            raise ImportError(f"the protocol needs the Python package {name!r}, which this host lacks; install its wheel "
                              f"from the bundle: pip install --no-index --find-links wheels {name}") from None
    import torch
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {device} but torch {torch.__version__} sees no CUDA GPU; use --device cpu")
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_protocol(protocol: GPUProtocolConfig) -> Path:
    from analysis.finetune.runner import run_spec
    from analysis.finetune.schedule import Job, run_jobs
    from analysis.provenance import read_jsonl
    bundle, out = Path(protocol.bundle).resolve(), Path(protocol.out).resolve()
    if not (bundle / "manifest.json").is_file():
        raise FileNotFoundError(f"{bundle} is not a bundle (no manifest.json); build one with "
                                "`python -m analysis.finetune.gpu_bundle --out DIR` in the repository")
    manifest = json.loads((bundle / "manifest.json").read_text())
    protocol = resolved(protocol, bundle)
    print(f"host: {check_host(protocol.device)}; bundle built {manifest.get('date')} at commit "
          f"{manifest.get('versions', {}).get('gatecore_commit')}")
    os.chdir(bundle)  # paths in the run specs are relative to the bundle, so run ids do not depend on where it lies
    model_dir = upcast_model(Path("model"), Path(".work") / manifest["model"].get("name", "model"))
    out_file = out / "finetune" / RESULTS_NAME
    runs = plan(protocol, model_dir, out_file, Path("."))
    done = {r.get("run_id") for r in read_jsonl(out_file)}
    todo = [r for r in runs if r[0] not in done]
    n_train = {t: _train_size(Path("glue"), t, protocol.train_examples) for t in protocol.tasks}
    cost = {rid: run_cost(spec, n_train[spec["task"]]) for rid, spec, _ in todo}
    print(f"{len(runs)} runs in the protocol, {len(runs) - len(todo)} already in {out_file}, {len(todo)} to do "
          f"(~{sum(cost.values()):,.0f} training steps), {protocol.workers} workers on {protocol.device}")
    if protocol.dry_run:
        for rid, spec, _ in todo:
            print(rid, spec["task"], spec["method"], spec.get("keep", ""), spec.get("bias", ""), "seed", spec["seed"])
        return out_file
    n = min(protocol.workers, len(todo))

    def annotate(rec):
        rec["gpu_protocol"] = {"workers": n, "bundle_commit": manifest.get("versions", {}).get("gatecore_commit"),
                               "weights": "float16 copy upcast to float32, trained in float32"}

    t0 = time.perf_counter()
    jobs = [Job(rid, cost[rid], (spec, cfg, None)) for rid, spec, cfg in todo]  # run_spec(spec, cfg, prior, device)
    errors = len(run_jobs(jobs, run_spec, out_file, n, protocol.threads, protocol.device, errors_file=out / "errors.jsonl",
                          annotate=annotate))
    print(f"{len(todo) - errors} runs written to {out_file} in {time.perf_counter() - t0:.0f}s; {errors} failed"
          + (f" (see {out / 'errors.jsonl'}; rerun the same command to redo them)" if errors else ""))
    if errors:
        raise RuntimeError(f"{errors} run(s) failed (see {out / 'errors.jsonl'}); rerun the same command to redo them")
    return out_file


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True, help="the bundle folder made by analysis.finetune.gpu_bundle")
    ap.add_argument("--out", type=Path, required=True, help="results folder; records go to OUT/finetune/gpu.jsonl")
    ap.add_argument("--workers", type=int, default=WORKERS, help="parallel worker processes on the one device (default: %(default)s)")
    ap.add_argument("--device", default="cuda", help="torch device of every worker (default: cuda)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads per worker (default: 1)")
    ap.add_argument("--tasks", nargs="+", help=f"GLUE tasks (default: the bundle's, i.e. {' '.join(GLUE_TASKS)})")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), help="methods (default: %(default)s)")
    ap.add_argument("--keeps", nargs="+", type=float, default=list(KEEPS), help="keep targets of gates with bias (default: %(default)s)")
    ap.add_argument("--no-bias-keeps", nargs="*", type=float, default=list(NO_BIAS_KEEPS), help="keep targets of gates without bias (default: %(default)s)")
    ap.add_argument("--seeds", nargs="+", type=int, default=list(SEEDS), help="seeds (default: %(default)s)")
    ap.add_argument("--epochs", type=int, help=f"epochs for every task (default: {EPOCHS} else {DEFAULT_EPOCHS})")
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE, help="training batch size (default: %(default)s)")
    ap.add_argument("--max-len", type=int, default=MAX_LEN, help="max tokens per example (default: %(default)s)")
    ap.add_argument("--train-examples", type=int, help="train subset per task (default: the full training set)")
    ap.add_argument("--val-examples", type=int, help="val subset per task (default: all of the carved val split)")
    ap.add_argument("--dev-examples", type=int, help="dev subset per task (default: all)")
    ap.add_argument("--no-bench", dest="bench", action="store_false", help="skip the dense vs compressed latency measurement")
    ap.add_argument("--tiny", action="store_true", help="two runs on a few examples of one task (tests; first check on a host)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    return ap


def parse_args(argv=None) -> GPUProtocolConfig:
    """argv -> GPUProtocolConfig (tiny and the bundle's tasks are resolved by run_protocol and plan)."""
    return frozen(GPUProtocolConfig, vars(build_parser().parse_args(argv)))


def main(argv=None) -> int:
    run_protocol(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
