"""Run the whole finetuning protocol on an offline GPU host, from a bundle made by analysis.gpu_bundle.

    cd bundle && python -m analysis.gpu_protocol --bundle . --out results_gpu --workers 12
    # back home: cp results_gpu/finetune/gpu.jsonl results/finetune/ && make figures

The protocol: SST-2, MRPC, RTE, CoLA, STS-B on their full training sets (val carved from train, dev
reported); methods full, lora, bias, head, gates at keep 0.9/0.8/0.7/0.6/0.5 (bias on), gates at 0.7
without bias; 3 seeds: 150 independent runs. Each run is one call of the runner's `run_one`
(analysis.finetune, its defaults for lr, gate lr, lam, objective, sigma), in one of `--workers` worker
processes that share the one GPU (a 22M-parameter model uses a sliver of it; starting NVIDIA MPS on the
host lets their kernels overlap), scheduled by analysis.schedule exactly as `analysis.finetune --workers`
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
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from pathlib import Path

from analysis.data import GLUE_TASKS

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


def runner_argv(p, task: str, model_dir: Path, out_file: Path, bundle: Path) -> list[str]:
    """The analysis.finetune command line of one task's share of the protocol."""
    argv = ["--model", str(model_dir), "--tasks", task, "--methods", *p.methods, "--seeds", *map(str, p.seeds),
            "--keep", *map(str, p.keeps), "--no-bias-keep", *map(str, p.no_bias_keeps),
            "--epochs", str(p.epochs or EPOCHS.get(task, DEFAULT_EPOCHS)), "--batch-size", str(p.batch_size),
            "--max-len", str(p.max_len), "--glue-dir", str(bundle / "glue"), "--out", str(out_file),
            "--checkpoint-dir", str(out_file.parent.parent / "checkpoints"), "--device", p.device, "--threads", str(p.threads),
            "--quiet"]
    for k in ("train_examples", "val_examples", "dev_examples"):
        if getattr(p, k) is not None:
            argv += ["--" + k.replace("_", "-"), str(getattr(p, k))]
    return argv + (["--no-bench"] if p.no_bench else [])


def run_cost(spec: dict, n_train: int) -> float:
    """Training steps of a run (every point of its lr/lam grids), full finetuning counted x1.5: to start the
    longest first and to estimate the time left."""
    from analysis.protocols import run_cost as cost
    return cost(spec, n_train)


def plan(p, model_dir: Path, out_file: Path, bundle: Path) -> list[tuple[str, dict, list[str]]]:
    """(run_id, spec, runner argv) of every run, longest first."""
    from analysis import finetune
    runs = []
    for task in p.tasks:
        argv = runner_argv(p, task, model_dir, out_file, bundle)
        for spec in finetune.expand(finetune.parse_args(argv)):
            runs.append((finetune.run_id(spec), spec, argv))
    n_train = {t: _train_size(bundle / "glue", t, p.train_examples) for t in p.tasks}
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
    from analysis.gpu_bundle import HOST_MODULES
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


def run_protocol(p) -> Path:
    from analysis.finetune import run_spec
    from analysis.provenance import read_jsonl
    from analysis.schedule import Job, run_jobs
    bundle, out = Path(p.bundle).resolve(), Path(p.out).resolve()
    if not (bundle / "manifest.json").is_file():
        raise FileNotFoundError(f"{bundle} is not a bundle (no manifest.json); build one with "
                                "`python -m analysis.gpu_bundle --out DIR` in the repository")
    manifest = json.loads((bundle / "manifest.json").read_text())
    p.tasks = p.tasks or (manifest["tasks"][:1] if p.tiny else manifest["tasks"])
    print(f"host: {check_host(p.device)}; bundle built {manifest.get('date')} at commit "
          f"{manifest.get('versions', {}).get('gatecore_commit')}")
    os.chdir(bundle)  # paths in the run specs are relative to the bundle, so run ids do not depend on where it lies
    model_dir = upcast_model(Path("model"), Path(".work") / manifest["model"].get("name", "model"))
    out_file = out / "finetune" / RESULTS_NAME
    runs = plan(p, model_dir, out_file, Path("."))
    done = {r.get("run_id") for r in read_jsonl(out_file)}
    todo = [r for r in runs if r[0] not in done]
    n_train = {t: _train_size(Path("glue"), t, p.train_examples) for t in p.tasks}
    cost = {rid: run_cost(spec, n_train[spec["task"]]) for rid, spec, _ in todo}
    print(f"{len(runs)} runs in the protocol, {len(runs) - len(todo)} already in {out_file}, {len(todo)} to do "
          f"(~{sum(cost.values()):,.0f} training steps), {p.workers} workers on {p.device}")
    if p.dry_run:
        for rid, spec, _ in todo:
            print(rid, spec["task"], spec["method"], spec.get("keep", ""), spec.get("bias", ""), "seed", spec["seed"])
        return out_file
    n = min(p.workers, len(todo))

    def annotate(rec):
        rec["gpu_protocol"] = {"workers": n, "bundle_commit": manifest.get("versions", {}).get("gatecore_commit"),
                               "weights": "float16 copy upcast to float32, trained in float32"}

    t0 = time.perf_counter()
    jobs = [Job(rid, cost[rid], (spec, tuple(argv))) for rid, spec, argv in todo]
    errors = len(run_jobs(jobs, run_spec, out_file, n, p.threads, p.device, errors_file=out / "errors.jsonl",
                          annotate=annotate))
    print(f"{len(todo) - errors} runs written to {out_file} in {time.perf_counter() - t0:.0f}s; {errors} failed"
          + (f" (see {out / 'errors.jsonl'}; rerun the same command to redo them)" if errors else ""))
    return out_file


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True, help="the bundle folder made by analysis.gpu_bundle")
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
    ap.add_argument("--no-bench", action="store_true", help="skip the dense vs compressed latency measurement")
    ap.add_argument("--tiny", action="store_true", help="two runs on a few examples of one task (tests; first check on a host)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    return ap


def parse_args(argv=None):
    p = build_parser().parse_args(argv)
    if p.tiny:
        for k, v in TINY.items():
            if k != "tasks" or p.tasks is None:
                setattr(p, k, v)
    return p


def main(argv=None) -> int:
    run_protocol(parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
