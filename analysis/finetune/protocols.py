"""Named finetuning protocols (`python -m analysis.finetune --protocol NAME`) and their time estimate.

A protocol is a dict of SweepConfig field values (analysis/finetune/config.py); on the command line they
become the defaults and explicit options still win. Three fields have no option: `task_epochs` and
`task_train_examples` (per task, used where --epochs / --train-examples are not given) and `lr_grids`
(per method lr grid); `one_seed` lists methods (or "gates-no-bias") run on the first seed only;
`grid_on_first_seed` searches the grids on the first seed only, and the later seeds train its choice.

`estimate(specs, workers)` is the dry run's wall time: each run's training steps (every point of its
grids) times a measured step time, plus its evaluations, scheduled longest first on `workers` workers
exactly as analysis.finetune.schedule does. Step times come from files, not guesses:
  - the MiniLM gates step per task, bucketed batches, 1 thread, CPU seconds (one worker per core):
    results/bench/batching.json (analysis.bench.batching);
  - the other methods' step relative to gates (bias on), median over tasks of the runner's own
    measured step_time_s in results/finetune/cpu.jsonl (1 thread, same machine).
"""
from __future__ import annotations

import statistics
from pathlib import Path

from analysis.provenance import ROOT, read_jsonl

GLUE5 = ["SST-2", "MRPC", "RTE", "CoLA", "STS-B"]
# epochs from the convergence check (results/finetune/convergence-check_plateau.md): LoRA, the slowest, is on
# its plateau after ~1000 steps on SST-2 (1.7 of 2 epochs of 20k) and ~390 on MRPC (3.8 of 5 epochs); the
# tasks without a check get about 450-500 steps, at most 5 epochs (RTE: 5 epochs, ~350 steps)
CONVERGED_EPOCHS = {"SST-2": 2, "MRPC": 5, "RTE": 5, "CoLA": 2, "STS-B": 3}
# the same grid size (2) for every method; for gates the gate-lr grid is the searched one
CONVERGED_LR_GRIDS = {"head": [1e-3, 1e-2], "bias": [1e-3, 3e-3], "lora": [5e-4, 2e-3], "full": [3e-5, 1e-4],
                      "gates": [1e-3]}
PROTOCOLS = {
    # the smoke-size protocol (~45 min on 2 shared cores): train subsets, one seed, one keep target
    "cpu": dict(tasks=GLUE5, methods=["head", "bias", "lora", "full", "gates"],
                seeds=[0], keep=[0.7], no_bias_keep=[0.7], train_examples=800, val_examples=300,
                dev_examples=None, epochs=3, max_len=64, curve_points=3,
                threads=1),  # 1 thread: on busy shared cores 2 threads thrashed (0.6 s vs 17 s per MiniLM step)
    # the converged CPU protocol of issue 9 (plan for ~4 h wall with --workers 2 --threads 1)
    "cpu-converged": dict(tasks=GLUE5, methods=["head", "bias", "lora", "full", "gates"], seeds=[0, 1, 2],
                          keep=[0.7, 0.6], no_bias_keep=[0.7], one_seed=["full", "head", "gates-no-bias"],
                          grid_on_first_seed=True,
                          train_examples=None, task_train_examples={"SST-2": 20000}, val_examples=None,
                          dev_examples=None, epochs=None, task_epochs=CONVERGED_EPOCHS, max_len=128,
                          lr_grids=CONVERGED_LR_GRIDS, gate_lr=[0.1, 0.3], lam=[1.0], curve_points=8, objective="target",
                          threads=1, workers=2),
    # long runs with a dense curve on the bounded dev subset, to size cpu-converged's epochs
    # gates use the authors' `target` objective here, so `gates` and the kurtosis-weighted variant differ in the
    # weighting alone (issue 16's comparison); the controller holds both to the same removed fraction
    "convergence-check": dict(tasks=["SST-2", "MRPC"], methods=["lora", "bias", "gates"], seeds=[0, 1, 2],
                              keep=[0.7], no_bias_keep=[], kurtosis_keep=[0.7], kurtosis_tau=None, objective="target",
                              train_examples=None, task_train_examples={"SST-2": 20000}, val_examples=None,
                              dev_examples=None, epochs=None, task_epochs={"SST-2": 2, "MRPC": 5}, max_len=128,
                              curve_points=12, threads=1, workers=2),
}
DEFAULT_EPOCHS = 3
EVAL_VS_STEP = 1 / 3         # an example's forward in eval, relative to its share of a training step
BENCH_S = 15.0               # compress + dense-vs-compressed latency of a gate run


def grid_size(spec: dict) -> int:
    n = 1
    for k in ("lr_grid", "lam_grid", "gate_lr_grid"):
        n *= len(spec.get(k) or [None])
    return n


def run_cost(spec: dict, n_train: int) -> float:
    """Training steps of a run, every grid point, full finetuning counted x1.5 (for ordering only)."""
    steps = -(-n_train // spec["batch_size"]) * spec["epochs"]
    return grid_size(spec) * steps * (1.5 if spec["method"] == "full" else 1.0)


def step_times(batching=ROOT / "results" / "bench" / "batching.json", runs=ROOT / "results" / "finetune" / "cpu.jsonl"):
    """({task: gates step s, bucketed}, {method: step / gates step}) from the measured files, or None."""
    import json
    if not Path(batching).is_file():
        return None
    tasks = json.loads(Path(batching).read_text())["tasks"]
    gates = {t: v.get("step_cpu_s", v["step_s"])["bucketed"] for t, v in tasks.items()}  # CPU time: steadier
    by = {}
    for r in read_jsonl(runs):
        c = r["config"]
        if c["method"] != "gates" or c.get("bias", True):
            by.setdefault(c["task"], {})[c["method"]] = r["step_time_s"]
    ratio = {m: statistics.median(v[m] / v["gates"] for v in by.values() if m in v and "gates" in v)
             for m in {m for v in by.values() for m in v}}
    return gates, ratio


def estimate(specs: list[dict], sizes: dict, workers: int, curve_points: int = 4, times=None) -> dict:
    """Seconds per run and the longest-first makespan on `workers` workers; `sizes[task]` = (train, val, dev)."""
    times = times or step_times()
    if times is None:
        return {"source": "no results/bench/batching.json: run python -m analysis.bench.batching", "wall_s": None}
    gates, ratio = times
    per_run = []
    for s in specs:
        n_train, n_val, n_dev = sizes[s["task"]]
        step = gates[s["task"]] * ratio.get(s["method"].split("+")[0], 1.0)
        steps = -(-n_train // s["batch_size"]) * s["epochs"]
        per_ex = gates[s["task"]] / s["batch_size"] * EVAL_VS_STEP
        curve = curve_points * min(n_dev, s.get("curve_dev_examples") or n_dev)
        one = steps * step + (curve + n_val) * per_ex  # one grid point: training, its curve, its val score
        per_run.append(grid_size(s) * one + n_dev * per_ex + (BENCH_S + n_dev * per_ex) * (s["method"] == "gates"))
    load = [0.0] * max(1, workers)
    for t in sorted(per_run, reverse=True):  # what analysis.finetune.schedule does: longest first, to the first free worker
        load[load.index(min(load))] += t
    return {"source": "results/bench/batching.json (gates CPU s per bucketed step, per task) x results/finetune/cpu.jsonl "
                      "(method ratios)",
            "run_s": per_run, "serial_s": sum(per_run), "wall_s": max(load), "workers": workers}
