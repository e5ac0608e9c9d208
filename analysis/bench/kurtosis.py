"""Step-time overhead of the kurtosis-weighted target penalty on MiniLM (issue 16).

    python -m analysis.bench.kurtosis [--batch 32] [--seq 64] [--steps 4] [--repeats 5] [--threads 1]

Two copies of MiniLM with gates on all six matrices of every layer, trained side by side in this
one process, interleaved round by round so machine noise hits both alike:
    plain:    loss + lam * sparsity_penalty(model, "target", target)
    kurtosis: the same with kurtosis_tau, input-mean recording on (gatecore.track_input_means)
The result is the ratio of the median step times (wall and this process's CPU time). Also
records how far from uniform the weights are at this tau (n_open * w per gate vector).
Writes results/bench/kurtosis_overhead.json.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass, fields

import torch

import gatecore
from analysis import doc_blocks
from analysis.cli import add_options, from_args, option
from analysis.constants import study_results
from analysis.provenance import provenance, read_record, write_json
from gatecore.train import Objective, train_step

BATCH, SEQ, STEPS, REPEATS, WARMUP, THREADS = 32, 64, 4, 5, 2, 1
TAU, TARGET, LAM, LR = 100.0, 0.3, 0.1, 1e-3
VARIANTS = ("plain", "kurtosis")


@dataclass(frozen=True)
class KurtosisBenchConfig:
    batch: int = option(BATCH, "sequences per step")
    seq: int = option(SEQ, "tokens per sequence")
    steps: int = option(STEPS, "timed steps per variant per round")
    repeats: int = option(REPEATS, "interleaved rounds")
    threads: int = option(THREADS, "torch threads")
    tau: float = option(TAU, "kurtosis_tau of the weighted variant")
    out: str = option(str(study_results("bench") / "kurtosis_overhead.json"), "results file")


def build(variant: str, seed: int = 0):
    torch.manual_seed(seed)
    model, _ = gatecore.load_model(num_labels=2)
    gatecore.setup_method(model, "gates")  # all six matrices of every layer, their biases, the head
    if variant == "kurtosis":
        gatecore.track_input_means(model)
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    return model, opt


def make_batch(vocab_size: int, batch: int, seq: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab_size, (batch, seq), generator=g)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, torch.randint(0, 2, (batch,), generator=g)


def step(model, opt, inputs, labels, tau):
    train_step(
        model,
        inputs,
        lambda m, b: torch.nn.functional.cross_entropy(m(**b).logits, labels),
        opt,
        objective=Objective(LAM, "target", target=TARGET, kurtosis_tau=tau),
    )


def weight_spread(model, tau: float) -> dict:
    """n_open * w per gate vector: 1 everywhere means uniform (plain target-keep)."""
    lo, hi, ratios = [], [], []
    for w_r, w_c in gatecore.kurtosis_weights(model, tau).values():
        for w in (w_r, w_c):
            if w is None:
                continue
            v = w[w > 0] * (w > 0).sum()
            lo.append(v.min().item())
            hi.append(v.max().item())
            ratios.append(hi[-1] / lo[-1])
    return {
        "n_times_w_min": min(lo),
        "n_times_w_max": max(hi),
        "max_over_min_median": statistics.median(ratios),
        "max_over_min_max": max(ratios),
        "vectors": len(ratios),
    }


def doc_block(results_dir) -> str | None:
    """docs/results.md's table of <results_dir>/bench/kurtosis_overhead.json (None without it)."""
    path = study_results("bench", results_dir) / "kurtosis_overhead.json"
    rec = read_record(path)
    if rec is None:
        return None
    res = rec["results"]
    head = ["penalty", "step, wall ms", "step, CPU ms", "penalty call alone, ms"]
    rows = [
        [v, f"{r['step_ms_median']:.0f}", f"{r['cpu_ms_median']:.0f}", f"{r['penalty_call_ms']:.1f}"]
        for v, r in res.items()
    ]
    rows.append(["kurtosis / plain", f"{rec['step_time_ratio_wall']:.2f}x", f"{rec['step_time_ratio_cpu']:.2f}x", ""])
    cfg, ws = rec["config"], rec["weight_spread"]
    note = (
        f"Medians of {cfg['repeats']} interleaved rounds of {cfg['steps']} steps, batch {cfg['batch']} x {cfg['seq']}, "
        f"{cfg['threads']} thread(s), tau {cfg['tau']:g}. Weights after the timed steps, n_open * w per gate vector (1: uniform): "
        f"{ws['n_times_w_min']:.2f} to {ws['n_times_w_max']:.2f} over {ws['vectors']} vectors (max / min within a "
        f"vector: median {ws['max_over_min_median']:.2f}, largest {ws['max_over_min_max']:.2f})."
    )
    return f"{doc_blocks.table(head, rows)}\n\n{note} {doc_blocks.source(path, rec, __name__)}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(ap, KurtosisBenchConfig)
    args = from_args(KurtosisBenchConfig, ap.parse_args(argv))
    torch.set_num_threads(args.threads)
    setups = {v: build(v) for v in VARIANTS}
    taus = {"plain": None, "kurtosis": args.tau}
    inputs, labels = make_batch(setups["plain"][0].config.vocab_size, args.batch, args.seq)
    for v, (model, opt) in setups.items():
        for _ in range(WARMUP):
            step(model, opt, inputs, labels, taus[v])
    wall, cpu = {v: [] for v in VARIANTS}, {v: [] for v in VARIANTS}
    for r in range(args.repeats):
        for v, (model, opt) in setups.items():
            t, c = time.perf_counter(), time.process_time()
            for _ in range(args.steps):
                step(model, opt, inputs, labels, taus[v])
            wall[v].append((time.perf_counter() - t) / args.steps * 1e3)
            cpu[v].append((time.process_time() - c) / args.steps * 1e3)
        print(
            f"round {r + 1}/{args.repeats}: "
            + ", ".join(f"{v} {wall[v][-1]:.0f} ms wall / {cpu[v][-1]:.0f} ms cpu" for v in VARIANTS)
        )
    med = {v: (statistics.median(wall[v]), statistics.median(cpu[v])) for v in VARIANTS}
    ratio_wall = med["kurtosis"][0] / med["plain"][0]
    ratio_cpu = med["kurtosis"][1] / med["plain"][1]
    # the penalty call alone (weights included), outside the step, for scale
    model = setups["kurtosis"][0]
    pen_ms = {}
    for v in VARIANTS:
        t = time.perf_counter()
        for _ in range(5):
            gatecore.sparsity_penalty(model, "target", target=TARGET, kurtosis_tau=taus[v])
        pen_ms[v] = (time.perf_counter() - t) / 5 * 1e3
    res = {
        v: {
            "step_ms_median": med[v][0],
            "step_ms_all": wall[v],
            "cpu_ms_median": med[v][1],
            "cpu_ms_all": cpu[v],
            "penalty_call_ms": pen_ms[v],
        }
        for v in VARIANTS
    }
    config = {f.name: getattr(args, f.name) for f in fields(args) if f.name != "out"}
    out = {
        **provenance(config | {"target": TARGET, "lam": LAM, "lr": LR, "warmup": WARMUP}, seed=0),
        "results": res,
        "step_time_ratio_wall": ratio_wall,
        "step_time_ratio_cpu": ratio_cpu,
        "weight_spread": weight_spread(model, args.tau),
    }
    write_json(args.out, out)
    print(f"\nMiniLM, gates on all six matrices, batch {args.batch} x {args.seq} tokens, {args.threads} thread(s):")
    for v in VARIANTS:
        print(f"  {v:8s} {med[v][0]:7.0f} ms wall, {med[v][1]:7.0f} ms cpu per step; penalty call {pen_ms[v]:.1f} ms")
    print(f"kurtosis / plain step time: {ratio_wall:.3f} (wall), {ratio_cpu:.3f} (cpu)")
    ws = out["weight_spread"]
    print(
        f"n_open * w at tau={args.tau:g}: {ws['n_times_w_min']:.4f} .. {ws['n_times_w_max']:.4f} "
        f"(median max/min per vector {ws['max_over_min_median']:.4f})"
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
