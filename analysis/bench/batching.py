"""Random vs length-bucketed training batches on the GLUE tasks: padding, and the MiniLM gates step time.

    python -m analysis.bench.batching [--tasks SST-2 MRPC] [--rounds 3] [--steps 4]

Per task, over one epoch of the full training split (MiniLM tokenizer, MAX_LEN): tokens the batches
carry (rows x longest row) over the real tokens, for random batches (the runner's old order) and for
bucketed ones (analysis.finetune.batching). Then the step time of the runner's gates step (MiniLM, gates with
biases, params penalty, AdamW; 1 thread): `rounds` x `steps` pairs of steps, one on a batch drawn at
random from the random epoch, one from the bucketed epoch, alternating step by step in this one process
so machine noise hits both alike. Wall time and this process's CPU time are both recorded; on shared
cores the CPU time is the steadier (other processes inflate wall time, not CPU time). The ratio
random/bucketed is the result; the CPU seconds per bucketed step also feed `analysis.finetune
--dry-run`'s wall-time estimate (one worker per core). Writes results/bench/batching.json.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import torch

import gatecore
from analysis import doc_blocks
from analysis.cli import add_options, from_args, option
from analysis.constants import GLUE_TASKS, study_results
from analysis.data import load_task
from analysis.finetune.batching import POOL, bucketed_batches, padding_ratio, random_batches
from analysis.finetune.encoding import collate, encode, task_loss_fn
from analysis.finetune.train import build_model
from analysis.provenance import provenance, read_record, write_json
from gatecore.train import Objective, train_step

BATCH, MAX_LEN, ROUNDS, STEPS, WARMUP, SEED = 32, 128, 3, 4, 2, 0
OUT = study_results("bench") / "batching.json"


@dataclass(frozen=True)
class BatchingBenchConfig:
    tasks: tuple = option(GLUE_TASKS, "GLUE tasks")
    batch: int = option(BATCH, "batch size")
    max_len: int = option(MAX_LEN, "max tokens per example")
    rounds: int = option(ROUNDS, "interleaved rounds")
    steps: int = option(STEPS, "timed steps per scheme per round")
    glue_dir: str | None = option(None, "GLUE folder (None: analysis.data's)")
    out: Path = option(OUT, "results file")


def gates_model(num_labels: int):
    cfg = dict(model=gatecore.OFFLINE_MODEL, method="gates", seed=SEED, sigma=0.1, reg_sigma=0.5, bias=True)
    model, tok = build_model(cfg, num_labels)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    return model.train(), tok, opt


def step(model, opt, batch, labels, num_labels) -> None:
    train_step(
        model, (batch, labels), task_loss_fn("mean", num_labels), opt, objective=Objective(1.0, "params", target=0.3)
    )


def bench_task(name: str, args) -> dict:
    task = load_task(name, glue=args.glue_dir)
    model, tok, opt = gates_model(task.num_labels)
    enc = encode(tok, task.train, args.max_len)
    lengths = [len(x) for x in enc.ids]
    schemes = {
        "random": random_batches(len(lengths), args.batch, random.Random(SEED)),
        "bucketed": bucketed_batches(lengths, args.batch, random.Random(SEED), POOL),
    }
    pick = random.Random(SEED + 1)
    times, cpu, tokens = ({k: [] for k in schemes} for _ in range(3))
    for b in pick.sample(schemes["random"], WARMUP):
        step(model, opt, *collate(enc, b, tok.pad_token_id, "cpu"), task.num_labels)
    draws = {k: pick.sample(b, args.rounds * args.steps) for k, b in schemes.items()}
    for i in range(args.rounds * args.steps):
        for k in schemes:  # alternate step by step
            inputs, labels = collate(enc, draws[k][i], tok.pad_token_id, "cpu")
            t, c = time.perf_counter(), time.process_time()
            step(model, opt, inputs, labels, task.num_labels)
            times[k].append(time.perf_counter() - t)
            cpu[k].append(time.process_time() - c)
            tokens[k].append(inputs["input_ids"].numel())
    out = {
        "n_train": len(lengths),
        "mean_len": statistics.fmean(lengths),
        "padding_ratio": {k: padding_ratio(lengths, b) for k, b in schemes.items()},
        "tokens_per_batch": {
            k: sum(len(x) * max(lengths[j] for j in x) for x in b) / len(b) for k, b in schemes.items()
        },
        "step_s": {k: statistics.fmean(v) for k, v in times.items()},
        "step_cpu_s": {k: statistics.fmean(v) for k, v in cpu.items()},
        "step_s_all": times,
        "step_cpu_s_all": cpu,
        "timed_batch_tokens": {k: statistics.fmean(v) for k, v in tokens.items()},
    }
    out["tokens_per_batch"]["real"] = sum(lengths) / len(schemes["random"])
    out["step_ratio_random_over_bucketed"] = out["step_s"]["random"] / out["step_s"]["bucketed"]
    out["cpu_ratio_random_over_bucketed"] = out["step_cpu_s"]["random"] / out["step_cpu_s"]["bucketed"]
    return out


def doc_block(results_dir) -> str | None:
    """docs/results.md's table of <results_dir>/bench/batching.json (None without it): padding and step time per task."""
    path = study_results("bench", results_dir) / OUT.name
    rec = read_record(path)
    if rec is None:
        return None
    head = ["task", "train examples", "mean tokens", "padded / real tokens: random → bucketed"]
    head += ["step time random / bucketed: wall", "CPU", "bucketed step, CPU s"]
    rows = [
        [
            task,
            f"{r['n_train']:,}",
            f"{r['mean_len']:.1f}",
            f"{r['padding_ratio']['random']:.2f} → {r['padding_ratio']['bucketed']:.2f}",
            f"{r['step_ratio_random_over_bucketed']:.2f}x",
            f"{r['cpu_ratio_random_over_bucketed']:.2f}x",
            f"{r['step_cpu_s']['bucketed']:.2f}",
        ]
        for task, r in rec["tasks"].items()
    ]
    cfg = rec["config"]
    note = f"MiniLM gates step, batch {cfg['batch']}, {rec['threads']} thread(s), {cfg['rounds']} x {cfg['steps']} steps per scheme."
    return f"{doc_blocks.table(head, rows)}\n\n{note} {doc_blocks.source(path, rec, __name__)}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(ap, BatchingBenchConfig)
    args = from_args(BatchingBenchConfig, ap.parse_args(argv))
    torch.set_num_threads(1)
    torch.manual_seed(SEED)
    res = {}
    print(
        f"{'task':<6} {'pad random':>10} {'pad bucketed':>12} {'step random':>11} {'step bucketed':>13} {'ratio':>6} "
        f"{'cpu random':>10} {'cpu bucketed':>12} {'ratio':>6}"
    )
    for t in args.tasks:
        r = res[t] = bench_task(t, args)
        print(
            f"{t:<6} {r['padding_ratio']['random']:>10.2f} {r['padding_ratio']['bucketed']:>12.2f} "
            f"{r['step_s']['random']:>10.3f}s {r['step_s']['bucketed']:>12.3f}s "
            f"{r['step_ratio_random_over_bucketed']:>6.2f} "
            f"{r['step_cpu_s']['random']:>9.3f}s {r['step_cpu_s']['bucketed']:>11.3f}s "
            f"{r['cpu_ratio_random_over_bucketed']:>6.2f}"
        )
    cfg = {k: getattr(args, k) for k in ("tasks", "batch", "max_len", "rounds", "steps")}
    cfg |= {"pool": POOL, "warmup": WARMUP, "method": "gates (bias, params penalty)"}
    write_json(args.out, {**provenance(cfg, SEED, "cpu"), "tasks": res})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
