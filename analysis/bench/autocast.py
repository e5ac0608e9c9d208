"""Training-step time under autocast (bfloat16) against float32, per task and method, on one model in one process.

    python -m analysis.bench.autocast [--model all-mpnet-base-v2] [--tasks SST-2 MRPC] [--steps 2]

For each task and method, the runner's step (analysis.bench.model_steps.step: mean pooling, the task loss plus
the gate methods' penalty, AdamW with the runner's groups, 1 thread) is timed in float32 and with its forward
under torch.autocast(dtype) (gatecore.train_step's `autocast`, as the runner trains) alternately, step by step, on the same length-bucketed batches of one model, after
`WARMUP` untimed steps of each. The CPU-time ratio float32 / autocast is the result (machine noise hits both
alike); the dry run of a protocol trained under autocast (`--autocast`) divides float32 step times by it until
the protocol has records of its own (analysis/finetune/protocols.py, `_autocast_rows`). Only a CPU with
bfloat16 matrix units (AMX) gains much; elsewhere the ratio can fall below 1. Resumable like model_steps: a
task already in the results file (same config) is kept. Writes results/bench/autocast_<model>.json.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer

import gatecore
from analysis import doc_blocks
from analysis.bench.model_steps import BATCH, MAX_LEN, MODEL, SEED, WARMUP, check_model, method_model, step
from analysis.cli import add_options, from_args, option
from analysis.constants import study_results
from analysis.data import load_task
from analysis.finetune.batching import POOL, bucketed_batches
from analysis.finetune.encoding import collate, encode
from analysis.provenance import provenance, read_record, write_json
from gatecore.methods import METHODS
from gatecore.train import AUTOCAST_DTYPES

TASKS = ("SST-2", "MRPC", "STS-B", "CoLA")


@dataclass(frozen=True)
class AutocastConfig:
    model: str = option(MODEL, "the model timed")
    tasks: tuple = option(TASKS, "GLUE tasks")
    methods: tuple = option(tuple(METHODS), "methods")
    dtype: str = option("bfloat16", "autocast dtype")
    steps: int = option(2, "timed steps per precision, method and task")
    glue_dir: str | None = option(None, "GLUE folder; None: analysis.data's")
    out: str | None = option(None, "results file; None: results/bench/autocast_<model>.json")


def chunk_config(cfg: AutocastConfig) -> dict:
    return {
        "model": cfg.model,
        "methods": list(cfg.methods),
        "dtype": cfg.dtype,
        "batch": BATCH,
        "steps": cfg.steps,
        "max_len": MAX_LEN,
        "warmup": WARMUP,
        "threads": 1,
    }


def bench_method(task, name: str, method: str, batches: list, enc, pad_id: int, dtype) -> dict:
    """Model `name`, one method: float32 and autocast steps alternately on each batch (the first WARMUP untimed)."""
    model, _, opt = method_model(name, method, task.num_labels)
    cpu, tokens = {"float32": [], "autocast": []}, []
    for i, idx in enumerate(batches):
        inputs, labels = collate(enc, idx, pad_id, "cpu")
        tokens.append(inputs["input_ids"].numel())
        for mode in cpu:
            c = time.process_time()
            step(model, opt, method, inputs, labels, task.num_labels, dtype if mode == "autocast" else None)
            if i >= WARMUP:
                cpu[mode].append(time.process_time() - c)
    out = {f"{m}_cpu_s": statistics.fmean(v) for m, v in cpu.items()}
    out["ratio_cpu"] = out["float32_cpu_s"] / out["autocast_cpu_s"]
    out["tokens_per_batch"] = statistics.fmean(tokens[WARMUP:])
    return out


def matrix_flags() -> list[str]:
    """The CPU's bfloat16 / AMX flags (Linux /proc/cpuinfo; [] elsewhere): what decides the speedup."""
    info = Path("/proc/cpuinfo")
    flags = next((ln.split(":", 1)[1].split() for ln in info.read_text().splitlines() if ln.startswith("flags")), [])
    return sorted(f for f in set(flags) if f.startswith("amx") or f.endswith("bf16")) if info.is_file() else []


def bench_task(name: str, cfg: AutocastConfig) -> dict:
    task = load_task(name, glue=cfg.glue_dir)
    tok = AutoTokenizer.from_pretrained(gatecore.resolve_model(cfg.model))
    enc = encode(tok, task.train, MAX_LEN)
    epoch = bucketed_batches([len(x) for x in enc.ids], BATCH, random.Random(SEED), POOL)
    batches = random.Random(SEED + 1).sample(epoch, WARMUP + cfg.steps)
    res = {"methods": {}, "cpu_flags": matrix_flags(), **provenance(chunk_config(cfg), SEED, "cpu")}
    for method in cfg.methods:
        dtype = AUTOCAST_DTYPES[cfg.dtype]
        r = res["methods"][method] = bench_method(task, cfg.model, method, batches, enc, tok.pad_token_id, dtype)
        print(
            f"{name:<6} {method:<11} {r['float32_cpu_s']:>8.2f}s {r['autocast_cpu_s']:>8.2f}s {r['ratio_cpu']:>6.2f}x",
            flush=True,
        )
    return res


def results_path(model: str, bench_dir=None) -> Path:
    return Path(bench_dir or study_results("bench")) / f"autocast_{Path(model).name}.json"


def run(cfg: AutocastConfig) -> Path:
    torch.set_num_threads(1)
    out = Path(cfg.out) if cfg.out else results_path(cfg.model)
    same = chunk_config(cfg)
    done = read_record(out)["tasks"] if out.is_file() else {}
    tasks = {t: r for t, r in done.items() if {k: r["config"].get(k) for k in same} == same}
    print(f"{'task':<6} {'method':<11} {'float32':>9} {cfg.dtype:>9} {'ratio':>7}  (CPU s per step, 1 thread)")
    for t in cfg.tasks:
        if t in tasks:
            print(f"{t:<6} already in {out}: kept")
            continue
        tasks[t] = bench_task(t, cfg)
        med = {m: statistics.median(v["methods"][m]["ratio_cpu"] for v in tasks.values()) for m in cfg.methods}
        write_json(
            out, {**provenance({**same, "tasks": list(tasks)}, SEED, "cpu"), "median_ratio_cpu": med, "tasks": tasks}
        )
    print(f"wrote {out}")
    return out


def doc_block(results_dir) -> str | None:
    """docs/results.md's table of <results_dir>/bench/autocast_*.json: CPU s per step in both precisions."""
    parts = []
    for path in sorted(study_results("bench", results_dir).glob("autocast_*.json")):
        rec = read_record(path)
        cfg = rec["config"]
        head = ["task", "method", "float32, CPU s", f"{cfg['dtype']} autocast, CPU s", "ratio", "tokens per batch"]
        rows = [
            [t, m, f"{r['float32_cpu_s']:.2f}", f"{r['autocast_cpu_s']:.2f}", f"{r['ratio_cpu']:.2f}x"]
            + [f"{r['tokens_per_batch']:.0f}"]
            for t, v in rec["tasks"].items()
            for m, r in v["methods"].items()
        ]
        note = (
            f"{cfg['model']}, batch {cfg['batch']}, {cfg['steps']} timed steps per precision after {cfg['warmup']} "
            f"warm-up step(s), {cfg['threads']} thread."
        )
        parts.append(f"{doc_blocks.table(head, rows)}\n\n{note} {doc_blocks.source(path, rec, __name__)}")
    return "\n\n".join(parts) or None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(ap, AutocastConfig, choices={"methods": METHODS, "dtype": list(AUTOCAST_DTYPES)})
    cfg = from_args(AutocastConfig, ap.parse_args(argv))
    if cfg.steps < 1:
        ap.error("--steps must be >= 1")
    check_model(ap, cfg.model)
    run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
