"""Training-step time of each finetuning method on a second model against MiniLM, per task, in one process.

    python -m analysis.bench.model_steps [--model all-mpnet-base-v2] [--tasks SST-2 MRPC] [--steps 3]

For each task and method (head, bias, lora, full, gates, gates+lora), the runner's step (analysis/finetune
train.py: mean pooling, its loss, plus the `params` sparsity penalty for gate methods; AdamW with the
runner's parameter groups; 1 thread) is timed on MiniLM and on `--model`, alternating step by step, on
the same examples: `steps` batches drawn from one epoch of length-bucketed batches (bucketed by the
second model's token lengths, analysis/finetune/batching.py), each tokenized by each model's own
tokenizer, after `WARMUP` untimed steps. Machine noise hits both models alike, so the per-method ratio
model / MiniLM (of CPU seconds, the steadier on shared cores; wall seconds are recorded too) is the
result, and times the MiniLM gates step of results/bench/batching.json it sizes a protocol on the second model.
Only two models are held at a time (one method, one task). Resumable in chunks: the results file is
rewritten after each task, a task already in it (same model, methods, batch and steps) is kept, not
rerun (processes may run different tasks side by side: each reads the file back before writing it),
and each task records its own command and provenance, plus the process's peak RSS (run one task per
process for a per-task peak). Writes results/bench/model_steps_<model>.json.
"""

from __future__ import annotations

import argparse
import gc as pygc
import json
import random
import resource
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer

import gatecore
from analysis import doc_blocks
from analysis.cli import add_options, from_args, option
from analysis.constants import GLUE_TASKS, study_results
from analysis.data import load_task
from analysis.finetune.batching import POOL, bucketed_batches
from analysis.finetune.config import GATE_LR, HEAD_LR, LR_GRID, OBJECTIVE, REG_SIGMA, SIGMA
from analysis.finetune.encoding import collate, encode, task_loss_fn
from analysis.finetune.train import build_model
from analysis.provenance import provenance, read_record, write_json
from gatecore.methods import GATE_METHODS, METHODS, param_groups
from gatecore.train import Objective, train_step

MODEL, BATCH, MAX_LEN, STEPS, WARMUP, SEED = "all-mpnet-base-v2", 32, 128, 3, 1, 0
REMOVED = 0.3  # the penalty's target: what the runner asks by default (keep 0.7)


@dataclass(frozen=True)
class ModelStepsConfig:
    model: str = option(MODEL, "the model timed against MiniLM")
    tasks: tuple = option(tuple(GLUE_TASKS), "GLUE tasks")
    methods: tuple = option(tuple(METHODS), "methods")
    batch: int = option(BATCH, "batch size")
    steps: int = option(STEPS, "timed steps per model, method and task")
    glue_dir: str | None = option(None, "GLUE folder; None: analysis.data's")
    out: str | None = option(None, "results file; None: results/bench/model_steps_<model>.json")


def method_model(name: str, method: str, num_labels: int):
    """(model in train mode, tokenizer, AdamW) for `method`, built as the finetuning runner builds it."""
    cfg = dict(
        model=name, method=method, seed=SEED, sigma=SIGMA, reg_sigma=REG_SIGMA, bias=True, lora_r=8, lora_alpha=16
    )
    model, tok = build_model(cfg, num_labels)
    lr = LR_GRID[method][0]
    opt = torch.optim.AdamW(
        param_groups(model, lr, None if method == "head" else HEAD_LR, GATE_LR[0] if method in GATE_METHODS else None),
        weight_decay=0.0,
    )
    return model.train(), tok, opt


def step(model, opt, method, inputs, labels, num_labels, autocast=None) -> None:
    """The runner's training step (`autocast`: its forward's dtype under torch.autocast, None: float32)."""
    objective = Objective(1.0, OBJECTIVE, target=REMOVED) if method in GATE_METHODS else None
    loss_fn = task_loss_fn("mean", num_labels)
    train_step(model, (inputs, labels), loss_fn, opt, objective=objective, autocast=autocast)


def bench_method(task, method: str, batches: list, enc: dict) -> dict:
    """Both models (the keys of `enc`, their encoded train split), one method: WARMUP steps each, then
    `batches` alternating model by model."""
    names = tuple(enc)
    built = {n: method_model(n, method, task.num_labels) for n in names}
    wall, cpu, tokens = ({n: [] for n in names} for _ in range(3))
    for i, idx in enumerate(batches):
        for n, (model, tok, opt) in built.items():
            inputs, labels = collate(enc[n], idx, tok.pad_token_id, "cpu")
            t, c = time.perf_counter(), time.process_time()
            step(model, opt, method, inputs, labels, task.num_labels)
            if i >= WARMUP:
                wall[n].append(time.perf_counter() - t)
                cpu[n].append(time.process_time() - c)
                tokens[n].append(inputs["input_ids"].numel())
    base, other = names
    out = {
        n: {
            "cpu_s": statistics.fmean(cpu[n]),
            "wall_s": statistics.fmean(wall[n]),
            "cpu_s_all": cpu[n],
            "wall_s_all": wall[n],
            "tokens_per_batch": statistics.fmean(tokens[n]),
            "trainable": gatecore.count_parameters(built[n][0]).as_dict(),
        }
        for n in names
    }
    out["ratio_cpu"] = out[other]["cpu_s"] / out[base]["cpu_s"]
    out["ratio_wall"] = out[other]["wall_s"] / out[base]["wall_s"]
    del built
    pygc.collect()
    return out


def bench_task(name: str, cfg: ModelStepsConfig) -> dict:
    task = load_task(name, glue=cfg.glue_dir)
    names = (gatecore.OFFLINE_MODEL, cfg.model)
    enc = {n: encode(AutoTokenizer.from_pretrained(gatecore.resolve_model(n)), task.train, MAX_LEN) for n in names}
    lengths = [len(x) for x in enc[cfg.model].ids]  # the second model's lengths set the buckets
    epoch = bucketed_batches(lengths, cfg.batch, random.Random(SEED), POOL)
    batches = random.Random(SEED + 1).sample(epoch, WARMUP + cfg.steps)
    res = {"n_train": len(lengths), "methods": {}, **provenance(chunk_config(cfg), SEED, "cpu")}
    for method in cfg.methods:
        r = res["methods"][method] = bench_method(task, method, batches, enc)
        print(
            f"{name:<6} {method:<11} {r[gatecore.OFFLINE_MODEL]['cpu_s']:>8.2f}s {r[cfg.model]['cpu_s']:>8.2f}s "
            f"{r['ratio_cpu']:>6.2f}x {r['ratio_wall']:>6.2f}x {r[cfg.model]['tokens_per_batch']:>7.0f}",
            flush=True,
        )
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def kept_tasks(out: Path, cfg: ModelStepsConfig) -> dict:
    """The tasks of the results file measured with this config (same model, methods, batch, steps, ...)."""
    done = json.loads(out.read_text())["tasks"] if out.is_file() else {}
    same = chunk_config(cfg)
    return {t: r for t, r in done.items() if {k: r.get("config", {}).get(k) for k in same} == same}


def chunk_config(cfg: ModelStepsConfig) -> dict:
    return {
        "model": cfg.model,
        "methods": list(cfg.methods),
        "batch": cfg.batch,
        "steps": cfg.steps,
        "max_len": MAX_LEN,
        "warmup": WARMUP,
        "pool": POOL,
        "threads": 1,
        "pooling": "mean",
        "gate_penalty": f"{OBJECTIVE}, target {REMOVED}",
        "baseline": gatecore.OFFLINE_MODEL,
    }


def write(out, cfg: ModelStepsConfig, tasks: dict) -> dict:
    """The results file: every task measured so far (also by another process writing the same file: its
    tasks are read back first), the median ratio per method over them."""
    tasks.update({t: r for t, r in kept_tasks(out, cfg).items() if t not in tasks})
    ratios = {m: statistics.median(t["methods"][m]["ratio_cpu"] for t in tasks.values()) for m in cfg.methods}
    write_json(
        out,
        {
            **provenance({**chunk_config(cfg), "tasks": list(tasks)}, SEED, "cpu"),
            "median_ratio_cpu": ratios,
            "tasks": tasks,
        },
    )
    return ratios


def run(cfg: ModelStepsConfig) -> Path:
    """Every task of `cfg` not already in its results file (one process, 1 thread); returns that file."""
    torch.set_num_threads(1)
    out = Path(cfg.out or study_results("bench") / f"model_steps_{Path(cfg.model).name}.json")
    print(
        f"{'task':<6} {'method':<11} {'MiniLM':>9} {'model':>9} {'cpu':>7} {'wall':>7} {'tokens':>7}  (s per step, 1 thread)"
    )
    tasks = kept_tasks(out, cfg)
    for t in cfg.tasks:
        if t in tasks:
            print(f"{t:<6} already in {out}: kept")
            continue
        tasks[t] = bench_task(t, cfg)
        write(out, cfg, tasks)  # after each task: a killed run keeps what it measured
    ratios = write(out, cfg, tasks)
    print("median over tasks, CPU-time ratio model / MiniLM: " + ", ".join(f"{m} {r:.2f}x" for m, r in ratios.items()))
    print(f"wrote {out}")
    return out


def doc_block(results_dir) -> str | None:
    """docs/results.md's tables of <results_dir>/bench/model_steps_*.json, one per model (None without any):
    seconds per step on each model and their ratio, per task and method."""
    parts = []
    for path in sorted(study_results("bench", results_dir).glob("model_steps_*.json")):
        rec = read_record(path)
        base, model = rec["config"]["baseline"], rec["config"]["model"]
        head = ["task", "method", f"{base}, CPU s", f"{model}, CPU s", "ratio: CPU", "wall", "tokens per batch"]
        head.append(f"trainable on {model}")
        rows = [
            [task, method, f"{r[base]['cpu_s']:.2f}", f"{r[model]['cpu_s']:.2f}", f"{r['ratio_cpu']:.2f}x"]
            + [
                f"{r['ratio_wall']:.2f}x",
                f"{r[model]['tokens_per_batch']:.0f}",
                f"{r[model]['trainable']['trainable']:,}",
            ]
            for task, t in rec["tasks"].items()
            for method, r in t["methods"].items()
        ]
        cfg = rec["config"]
        note = f"Batch {cfg['batch']}, {cfg['steps']} timed steps per model after {cfg['warmup']} warm-up step(s), {cfg['threads']} thread(s)."
        parts.append(f"{doc_blocks.table(head, rows)}\n\n{note} {doc_blocks.source(path, rec, __name__)}")
    return "\n\n".join(parts) or None


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(ap, ModelStepsConfig, choices={"methods": METHODS})
    cfg = from_args(ModelStepsConfig, ap.parse_args(argv))
    if cfg.batch < 1 or cfg.steps < 1:
        ap.error("--batch and --steps must be >= 1")
    check_model(ap, cfg.model)
    run(cfg)
    return 0


def check_model(ap: argparse.ArgumentParser, name: str) -> None:
    """Exit 2 with one line (naming `make base-model` for the base model) when `name` does not resolve."""
    try:
        gatecore.resolve_model(name)
    except (FileNotFoundError, ImportError) as e:
        ap.error(str(e))


if __name__ == "__main__":
    raise SystemExit(main())
