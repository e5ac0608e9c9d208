"""Finetuning sweep: model x task x method x seed (x keep, bias for gates); lr/lam chosen on val.

    python -m analysis.finetune --tasks rotten_tomatoes --methods lora gates --train-examples 500
    python -m analysis.finetune --protocol cpu          # the reduced CPU protocol (make experiments)

One record per finished run is appended to results/finetune/<protocol or 'runs'>.jsonl (the record
contract of issue 6, read by analysis/finetune_results.py); a rerun skips run_ids already there (the
run_id hashes the run's spec, grids included), so a killed sweep loses at most the run in flight.
For each run, every (lr, lam, gate_lr) of the grid is trained and scored on the val split carved from
train, never on dev; a gate setting must also remove what was asked (measured keep <= keep + 0.05)
to be chosen. The chosen setting's dev metrics are reported, the whole search is recorded.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import sys
import tempfile
from pathlib import Path

import torch
from tqdm.auto import tqdm

import gatecore as gc

from .data import load_task
from .provenance import ROOT, append_jsonl, provenance, read_jsonl, small_mode
from .train import GATE_METHODS, METHODS, build_model, encode, evaluate, measured_keep, peak_mem_mb, train

# defaults, visible: per-method lr grids (searched on val), gate settings (DESIGN section 1)
LR_GRID = {"full": [1e-4], "lora": [1e-3], "bias": [1e-3], "head": [1e-3, 1e-2], "gates": [1e-3], "gates+lora": [1e-3]}
HEAD_LR = 1e-2         # the fresh task head of every method but `head` (whose lr is its grid); None = lr
GATE_LR = [0.2]        # a gate's theta moves from 1 to below -0.55 to close: far more than other weights move
LAM_GRID = [1.0]
KEEPS = [0.7]          # params objective: keep 70% of the gated weights, i.e. ask for 30% removed
OBJECTIVE = "params"
SIGMA, REG_SIGMA = 0.1, 0.5
LAM_WARMUP = 0.2       # fraction of the steps over which lam ramps from 0
CONTROL, CONTROL_EVERY, CONTROL_GAIN = True, 5, 0.2
KEEP_TOL = 0.05        # a gate setting "meets" its keep target when the measured keep is at most keep + this
PROTOCOLS = {  # reduced CPU protocol (~45 min on 2 shared cores): train subsets, one seed, one keep target
    "cpu": dict(tasks=["SST-2", "MRPC", "RTE", "CoLA", "STS-B"], methods=["head", "bias", "lora", "full", "gates"],
                seeds=[0], keep=[0.7], no_bias_keep=[0.7], train_examples=800, val_examples=300,
                dev_examples=None, epochs=3, max_len=64, curve_points=3,
                threads=1),  # 1 thread: on busy shared cores 2 threads thrashed (0.6 s vs 17 s per MiniLM step)
}
DEFAULT_CHECKPOINTS = str(ROOT / "checkpoints")  # git-ignored
BENCH_BATCH, BENCH_LEN, BENCH_REPEATS = 32, 128, 5  # speedup: dense vs compressed forward, same process


def run_id(spec: dict) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def expand(a) -> list[dict]:
    """Every run spec of the sweep; lr/lam grids stay in the spec (what is chosen is recorded beside it)."""
    specs = []
    for task in a.tasks:
        for seed in a.seeds:
            for method in a.methods:
                base = dict(model=a.model, task=task, method=method, seed=seed, epochs=a.epochs,
                            batch_size=a.batch_size, max_len=a.max_len, train_examples=a.train_examples,
                            val_examples=a.val_examples, dev_examples=a.dev_examples, pooling=a.pooling,
                            lr_grid=a.lr or LR_GRID[method], head_lr=None if method == "head" else a.head_lr)
                if method in ("lora", "gates+lora"):
                    base.update(lora_r=a.lora_r, lora_alpha=a.lora_alpha)
                if method not in GATE_METHODS:
                    specs.append(base)
                    continue
                base.update(objective=a.objective, lam_grid=a.lam, lam_warmup=a.lam_warmup, sigma=a.sigma,
                            reg_sigma=a.reg_sigma, gate_lr_grid=a.gate_lr, control=a.control,
                            control_every=CONTROL_EVERY, control_gain=CONTROL_GAIN)
                variants = [(k, True) for k in a.keep] + [(k, False) for k in a.no_bias_keep]
                specs += [{**base, "keep": k, "bias": b} for k, b in variants]
    return specs


def _copy_trainable(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def compressed_info(model, spec, task, dev_enc, pad_id, device, gated_dev: dict, bench: bool) -> dict:
    """Compress a copy, check its dev metric equals the gated one, and time it against the gated-free dense model."""
    from analysis.bench import measure_speedup  # built beside this runner; imported only when needed
    compressed = gc.compress(copy.deepcopy(model).eval())
    dev = evaluate(compressed, dev_enc, task, spec["pooling"], pad_id, device)
    seq = min(BENCH_LEN, model.config.max_position_embeddings)
    size = gc.size_report(model, compressed, seq=seq)
    layers = gc.gated_layers(model)
    kept_w = sum(compressed.get_submodule(n).weight.numel() for n in layers)
    info = {"params_total": size.compressed_params, "params_dense": size.dense_params,
            "linear_removed_fraction": 1.0 - kept_w / sum(m.out_features * m.in_features for m in layers.values()),
            "dev_main": dev[task.metric], "dev": dev, "matches_gated": dev == gated_dev, "size": size.as_dict(),
            "speedup_cpu": None, "bench": None}
    if dev != gated_dev:  # the invariant of DESIGN section 3; a float32 near-tie can flip a prediction
        print(f"warning: compressed dev {dev} != gated dev {gated_dev} ({spec['task']}, {spec['method']})", file=sys.stderr)
    if bench:
        dense, _ = build_model({**spec, "method": "head"}, task.num_labels)
        info["bench"] = measure_speedup(dense, compressed, batch=BENCH_BATCH, seq=seq, repeats=BENCH_REPEATS,
                                        device=device)
        info["speedup_cpu" if torch.device(device).type == "cpu" else "speedup_gpu"] = info["bench"]["speedup"]
    return info


def run_one(spec: dict, a, device, progress: bool = True) -> dict:
    """Train every (lr, lam, gate_lr) of the grid, pick the best on val, and build the run's record."""
    task = load_task(spec["task"], glue=a.glue_dir, data_dir=a.data, text_cols=a.text_cols, label_col=a.label_col,
                     regression=a.regression, train_examples=spec["train_examples"],
                     val_examples=spec["val_examples"], dev_examples=spec["dev_examples"])
    gated = spec["method"] in GATE_METHODS
    search, best = [], None
    grid = [(lr, lam, glr) for lr in spec["lr_grid"] for lam in spec.get("lam_grid", [None])
            for glr in spec.get("gate_lr_grid", [None])]
    for lr, lam, glr in grid:
        cfg = {k: v for k, v in spec.items() if not k.endswith("_grid")}
        cfg.update(lr=lr, **({"lam": lam, "gate_lr": glr} if gated else {}))
        model, tok = build_model(cfg, task.num_labels)
        pad = tok.pad_token_id if tok is not None else model.config.pad_token_id
        enc = {k: encode(tok, getattr(task, k), cfg["max_len"], model.config.vocab_size) for k in ("train", "val", "dev")}
        res = train(model, cfg, task, enc["train"], enc["dev"], pad, device, a.curve_points, progress)
        entry = {"lr": lr, "lam": lam, "val_main": evaluate(model, enc["val"], task, cfg["pooling"], pad, device)[task.metric]}
        if gated:
            kept = measured_keep(model, cfg["objective"])
            entry.update(gate_lr=glr, removed_fraction=gc.gate_report(model).removed_fraction,
                         measured_keep=kept, meets_keep=cfg["objective"] == "l0" or kept <= cfg["keep"] + KEEP_TOL)
        search.append(entry)
        # gate runs: the best val among the settings that removed what was asked (if any did)
        key = (entry.get("meets_keep", True), entry["val_main"])
        if best is None or key > best[0]:
            best = (key, cfg, model, res, enc, pad)
        else:
            del model
    (_, val_main), cfg, model, res, enc, pad = best
    dev = evaluate(model, enc["dev"], task, cfg["pooling"], pad, device)
    rec = {"run_id": run_id(spec), **provenance(cfg, cfg["seed"], device), "spec": spec, "task_info": task.info(),
           "dev": dev, "dev_main": dev[task.metric], "val_main": val_main,
           "hp_search": search if len(search) > 1 else None, "params": gc.count_parameters(model).as_dict(),
           "removed_fraction": 0.0, "layers": None, "curve": res.curve, "compressed": None,
           "train_time_s": res.train_time_s, "step_time_s": res.step_time_s, "steps": res.steps,
           "peak_mem_mb": peak_mem_mb(device), "checkpoint": None}
    if gated:
        rep = gc.gate_report(model)
        rec.update(removed_fraction=rep.removed_fraction, final_keep_target=res.final_keep_target,
                   layers=[{k: getattr(l, k) for k in ("name", "out_features", "in_features", "rows_kept", "cols_kept")}
                           for l in rep.layers])
        if not a.no_compress:
            rec["compressed"] = compressed_info(model, cfg, task, enc["dev"], pad, device, dev, not a.no_bench)
    if cfg["method"] != "full" and a.checkpoint_dir:
        path = Path(a.checkpoint_dir) / f"{rec['run_id']}.pt"
        gc.save_trainable(model, path, run_id=rec["run_id"], config=cfg, pooling=cfg["pooling"])
        rec["checkpoint"] = str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)
    return rec


def summary(records: list[dict]) -> str:
    rows = [f"{'task':<16} {'method':<11} {'keep':>5} {'bias':>5} {'lr':>8} {'val':>6} {'dev':>6} {'removed':>8} {'trainable':>10}"]
    for r in records:
        c = r["config"]
        rows.append(f"{c['task']:<16} {c['method']:<11} {c.get('keep', ''):>5} {str(c.get('bias', '')):>5} "
                    f"{c['lr']:>8.0e} {r['val_main']:>6.1f} {r['dev_main']:>6.1f} {r['removed_fraction']:>8.1%} "
                    f"{r['params']['trainable']:>10,}")
    return "\n".join(rows)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), help="a named protocol: its settings (PROTOCOLS) become the defaults, e.g. --protocol cpu --tasks RTE runs its RTE part")
    ap.add_argument("--out", type=Path, help="results file (default: results/finetune/<protocol or 'runs'>.jsonl; small mode: a temp folder)")
    ap.add_argument("--model", default=gc.OFFLINE_MODEL, help="model name/folder, or tiny-bert for a random tiny model")
    ap.add_argument("--tasks", nargs="+", default=["rotten_tomatoes"], help="GLUE names (SST-2, MRPC, RTE, CoLA, STS-B), rotten_tomatoes, csv, hf:PATH[:CONFIG]")
    ap.add_argument("--methods", nargs="+", default=["lora", "gates"], choices=METHODS, help="methods to run")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds")
    ap.add_argument("--lr", nargs="+", type=float, help="lr grid searched on val (default: per method, LR_GRID)")
    ap.add_argument("--head-lr", type=float, default=HEAD_LR, help="lr of the fresh task head (all methods but head)")
    ap.add_argument("--gate-lr", nargs="+", type=float, default=GATE_LR, help="lr grid of the gate parameters, searched on val")
    ap.add_argument("--lam", nargs="+", type=float, default=LAM_GRID, help="sparsity weight grid searched on val")
    ap.add_argument("--keep", nargs="+", type=float, default=KEEPS, help="keep targets, one run each (bias on): params = fraction of gated weights kept, target/l0 = per gate vector")
    ap.add_argument("--no-bias-keep", nargs="*", type=float, default=[], help="keep targets of extra gate runs without bias training")
    ap.add_argument("--objective", default=OBJECTIVE, choices=gc.penalty.KINDS, help="sparsity objective (DESIGN section 1)")
    ap.add_argument("--lam-warmup", type=float, default=LAM_WARMUP, help="fraction of steps over which lam ramps up from 0")
    ap.add_argument("--sigma", type=float, default=SIGMA, help="gate forward-noise scale")
    ap.add_argument("--reg-sigma", type=float, default=REG_SIGMA, help="scale inside the regulariser's Phi")
    ap.add_argument("--control", action=argparse.BooleanOptionalAction, default=CONTROL,
                    help="steer the penalty's keep target so the eval-gate keep meets the requested keep")
    ap.add_argument("--epochs", type=int, default=3, help="training epochs")
    ap.add_argument("--batch-size", type=int, default=32, help="training batch size")
    ap.add_argument("--max-len", type=int, default=128, help="max tokens per example (pairs truncated together)")
    ap.add_argument("--train-examples", type=int, help="fixed-seed train subset (default: all)")
    ap.add_argument("--val-examples", type=int, help="fixed-seed subset of the val split (default: all)")
    ap.add_argument("--dev-examples", type=int, help="fixed-seed subset of the dev split (default: all)")
    ap.add_argument("--pooling", default="mean", choices=["mean", "cls"], help="sentence representation fed to the classifier")
    ap.add_argument("--lora-r", type=int, default=8, help="LoRA rank")
    ap.add_argument("--lora-alpha", type=float, default=16, help="LoRA alpha")
    ap.add_argument("--curve-points", type=int, default=4, help="dev evaluations during training (the curve)")
    ap.add_argument("--checkpoint-dir", default=DEFAULT_CHECKPOINTS, help="trainable-state checkpoints ('' = none)")
    ap.add_argument("--glue-dir", help="GLUE folder (default: $GLUE_DIR or ../shared/data/glue)")
    ap.add_argument("--data", help="folder of train/dev CSV/TSV files (task 'csv')")
    ap.add_argument("--text-cols", nargs="+", help="text column(s) of --data / hf: tasks")
    ap.add_argument("--label-col", help="label column of --data / hf: tasks")
    ap.add_argument("--regression", action="store_true", help="--data / hf: labels are numeric scores")
    ap.add_argument("--no-compress", action="store_true", help="skip gatecore.compress of gate runs")
    ap.add_argument("--no-bench", action="store_true", help="skip the dense vs compressed latency measurement")
    ap.add_argument("--max-runs", type=int, help="stop after this many new runs (to split a sweep into chunks)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--dry-run", action="store_true", help="list the runs and exit")
    ap.add_argument("--quiet", action="store_true", help="no per-run progress bars")
    known, _ = ap.parse_known_args(argv)
    if known.protocol:  # the protocol's settings become the defaults; options given explicitly still win
        ap.set_defaults(**PROTOCOLS[known.protocol])
    a = ap.parse_args(argv)
    out_dir = ROOT / "results" / "finetune"
    if small_mode():  # CI / notebooks: the smallest sweep that still exercises everything, never into results/
        a.train_examples, a.val_examples, a.dev_examples, a.epochs = 32, 16, 32, 1
        out_dir = Path(tempfile.gettempdir()) / "gatecore-small"
        if a.checkpoint_dir == DEFAULT_CHECKPOINTS:
            a.checkpoint_dir = str(out_dir / "checkpoints")
    a.out = a.out or out_dir / f"{a.protocol or 'runs'}.jsonl"
    return a


def main(argv=None) -> int:
    a = parse_args(argv)
    torch.set_num_threads(a.threads)
    specs = expand(a)
    done = {r["run_id"] for r in read_jsonl(a.out)}
    todo = [s for s in specs if run_id(s) not in done]
    print(f"{len(specs)} runs, {len(specs) - len(todo)} already in {a.out}, {len(todo)} to do")
    if a.dry_run:
        for s in todo:
            print(run_id(s), json.dumps(s))
        return 0
    for s in tqdm(todo[:a.max_runs], desc="runs"):
        append_jsonl(a.out, run_one(s, a, a.device, progress=not a.quiet))
    ids = {run_id(s) for s in specs}
    print(summary([r for r in read_jsonl(a.out) if r["run_id"] in ids]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
