"""Finetuning sweep: model x task x method x seed (x keep, bias for gates); lr/lam chosen on val.

    python -m analysis.finetune --tasks rotten_tomatoes --methods lora gates --train-examples 500
    python -m analysis.finetune --protocol cpu          # the reduced CPU protocol (make experiments)
    python -m analysis.finetune --protocol cpu-converged --workers 2 --threads 1 --dry-run   # plan + wall time

One record per finished run is appended to results/finetune/<protocol or 'runs'>.jsonl (the record
contract of issue 6, read by analysis/finetune_results.py); a rerun skips run_ids already there (the
run_id hashes the run's spec, grids included), so a killed sweep loses at most the run in flight.
For each run, every (lr, lam, gate_lr) of the grid is trained and scored on the val split carved from
train, never on dev; a gate setting must also remove what was asked (|removed_got - removed_asked| <= 2
points, which the sparsity control guarantees, gatecore/sparsity_control.py) to be chosen. The chosen
setting's dev metrics are reported, the whole search is recorded. Runs go through analysis.schedule
(longest first, `--workers` processes, this process the one writer), as on the GPU host.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import multiprocessing as mp
import sys
import tempfile
from pathlib import Path

import torch

import gatecore
from gatecore import sparsity_control as sc
from gatecore.methods import GATE_METHODS, METHODS

from .data import load_task
from .protocols import DEFAULT_EPOCHS, EXTRA_DEFAULTS, PROTOCOLS, estimate, grid_size, run_cost
from .provenance import ROOT, provenance, read_jsonl, small_mode
from .schedule import Job, run_jobs
from .train import build_model, encode, evaluate, measured_keep, peak_mem_mb, train

# defaults, visible: per-method lr grids (searched on val), gate settings (docs/design.md §1)
LR_GRID = {"full": [1e-4], "lora": [1e-3], "bias": [1e-3], "head": [1e-3, 1e-2], "gates": [1e-3], "gates+lora": [1e-3]}
HEAD_LR = 1e-2         # the fresh task head of every method but `head` (whose lr is its grid); None = lr
GATE_LR = [0.2]        # a gate's theta moves from 1 to below -0.55 to close: far more than other weights move
LAM_GRID = [1.0]
KEEPS = [0.7]          # params objective: keep 70% of the gated weights, i.e. ask for 30% removed
OBJECTIVE = "params"
SIGMA, REG_SIGMA = 0.1, 0.5
LAM_WARMUP = 0.2       # fraction of the steps over which lam ramps from 0
CONTROL = True         # steer the removed fraction to the request (gatecore/sparsity_control.py)
BUCKETED = True        # length-bucketed training batches (analysis/batching.py)
CURVE_DEV_EXAMPLES = 500  # the dev curve along training uses this fixed-seed dev subset; the end, all of dev
KURTOSIS_TAU = 100.0   # the paper's tau, for the --kurtosis-keep runs when --kurtosis-tau is not given
DEFAULT_CHECKPOINTS = str(ROOT / "checkpoints")  # git-ignored
BENCH_BATCH, BENCH_LEN, BENCH_REPEATS = 32, 128, 5  # speedup: dense vs compressed forward, same process


def run_id(spec: dict) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def expand(args) -> list[dict]:
    """Every run spec of the sweep; lr/lam grids stay in the spec (what is chosen is recorded beside it)."""
    specs = []
    for task in args.tasks:
        for i, seed in enumerate(args.seeds):
            for method in args.methods:
                if i > 0 and method in args.one_seed:
                    continue
                base = dict(model=args.model, task=task, method=method, seed=seed,
                            epochs=args.epochs or args.task_epochs.get(task, DEFAULT_EPOCHS),
                            batch_size=args.batch_size, max_len=args.max_len,
                            train_examples=args.train_examples or args.task_train_examples.get(task),
                            val_examples=args.val_examples, dev_examples=args.dev_examples, pooling=args.pooling,
                            lr_grid=args.lr or args.lr_grids.get(method) or LR_GRID[method],
                            head_lr=None if method == "head" else args.head_lr, bucketed=args.bucketed,
                            curve_dev_examples=args.curve_dev_examples)
                if method in ("lora", "gates+lora"):
                    base.update(lora_r=args.lora_r, lora_alpha=args.lora_alpha)
                if method not in GATE_METHODS:
                    specs.append(base)
                    continue
                base.update(objective=args.objective, lam_grid=args.lam, lam_warmup=args.lam_warmup, sigma=args.sigma,
                            reg_sigma=args.reg_sigma, gate_lr_grid=args.gate_lr, control=args.control,
                            control_every=sc.EVERY, control_kp=sc.KP, control_ki=sc.KI, control_freeze=sc.FREEZE,
                            removed_tol=sc.TOL)
                if args.kurtosis_tau is not None:  # only when set, so other run ids do not change
                    base.update(kurtosis_tau=args.kurtosis_tau)
                variants = [dict(keep=k, bias=True) for k in args.keep]
                if i == 0 or "gates-no-bias" not in args.one_seed:
                    variants += [dict(keep=k, bias=False) for k in args.no_bias_keep]
                variants += [dict(keep=k, bias=True, objective="target", kurtosis_tau=args.kurtosis_tau or KURTOSIS_TAU)
                             for k in args.kurtosis_keep]  # the paper's kurtosis-weighted objective is `target`
                specs += [{**base, **v} for v in variants]
    return specs


def run_spec(spec: dict, argv: tuple, device) -> dict:
    """One run for analysis.schedule's workers: the runner's options from `argv`, parsed once per process."""
    if argv not in _PARSED:
        _PARSED[argv] = parse_args(list(argv))
    args = _PARSED[argv]
    return run_one(spec, args, device, progress=not args.quiet and mp.current_process().name == "MainProcess")


_PARSED: dict = {}


def compressed_info(model, spec, task, dev_enc, pad_id, device, gated_dev: dict, bench: bool) -> dict:
    """Compress a copy, check its dev metric equals the gated one, and time it against the gated-free dense model."""
    from analysis.bench import measure_speedup  # built beside this runner; imported only when needed
    compressed = gatecore.compress(copy.deepcopy(model).eval())
    dev = evaluate(compressed, dev_enc, task, spec["pooling"], pad_id, device)
    seq = min(BENCH_LEN, model.config.max_position_embeddings)
    size = gatecore.size_report(model, compressed, seq=seq)
    layers = gatecore.gated_layers(model)
    kept_w = sum(compressed.get_submodule(n).weight.numel() for n in layers)
    info = {"params_total": size.compressed_params, "params_dense": size.dense_params,
            "linear_removed_fraction": 1.0 - kept_w / sum(m.out_features * m.in_features for m in layers.values()),
            "dev_main": dev[task.metric], "dev": dev, "matches_gated": dev == gated_dev, "size": size.as_dict(),
            "speedup_cpu": None, "bench": None}
    if dev != gated_dev:  # the invariant of docs/design.md §3; a float32 near-tie can flip a prediction
        print(f"warning: compressed dev {dev} != gated dev {gated_dev} ({spec['task']}, {spec['method']})", file=sys.stderr)
    if bench:
        dense, _ = build_model({**spec, "method": "head"}, task.num_labels)
        info["bench"] = measure_speedup(dense, compressed, batch=BENCH_BATCH, seq=seq, repeats=BENCH_REPEATS,
                                        device=device)
        info["speedup_cpu" if torch.device(device).type == "cpu" else "speedup_gpu"] = info["bench"]["speedup"]
    return info


def run_one(spec: dict, args, device, progress: bool = True) -> dict:
    """Train every (lr, lam, gate_lr) of the grid, pick the best on val, and build the run's record."""
    task = load_task(spec["task"], glue=args.glue_dir, data_dir=args.data, text_cols=args.text_cols, label_col=args.label_col,
                     regression=args.regression, train_examples=spec["train_examples"],
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
        res = train(model, cfg, task, enc["train"], enc["dev"], pad, device, args.curve_points, progress)
        entry = {"lr": lr, "lam": lam, "val_main": evaluate(model, enc["val"], task, cfg["pooling"], pad, device)[task.metric]}
        if gated:
            got = sc.removed_got(model)  # after the final correction, as are the val/dev scores
            entry.update(gate_lr=glr, removed_fraction=got, removed_asked=res.removed_asked,
                         measured_keep=measured_keep(model, cfg["objective"]), correction=res.correction,
                         meets_keep=abs(got - res.removed_asked) <= cfg.get("removed_tol", sc.TOL))
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
           "hp_search": search if len(search) > 1 else None, "params": gatecore.count_parameters(model).as_dict(),
           "removed_fraction": 0.0, "layers": None, "curve": res.curve, "compressed": None,
           "train_time_s": res.train_time_s, "step_time_s": res.step_time_s, "steps": res.steps,
           "peak_mem_mb": peak_mem_mb(device), "checkpoint": None}
    if gated:
        rep = gatecore.gate_report(model)
        rec.update(removed_fraction=rep.removed_fraction, final_keep_target=res.final_keep_target,
                   removed_asked=res.removed_asked, removed_got=rep.removed_fraction, correction=res.correction,
                   layers=[{k: getattr(l, k) for k in ("name", "out_features", "in_features", "rows_kept", "cols_kept")}
                           for l in rep.layers])
        if not args.no_compress:
            rec["compressed"] = compressed_info(model, cfg, task, enc["dev"], pad, device, dev, not args.no_bench)
    if cfg["method"] != "full" and args.checkpoint_dir:
        path = Path(args.checkpoint_dir) / f"{rec['run_id']}.pt"
        gatecore.save_trainable(model, path, run_id=rec["run_id"], config=cfg, pooling=cfg["pooling"])
        rec["checkpoint"] = str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)
    return rec


def summary(records: list[dict]) -> str:
    rows = [f"{'task':<16} {'method':<11} {'keep':>5} {'bias':>5} {'lr':>8} {'val':>6} {'dev':>6} {'removed':>8} {'asked':>6} {'trainable':>10}"]
    for r in records:
        c = r["config"]
        rows.append(f"{c['task']:<16} {c['method']:<11} {c.get('keep', ''):>5} {str(c.get('bias', '')):>5} "
                    f"{c['lr']:>8.0e} {r['val_main']:>6.1f} {r['dev_main']:>6.1f} {r['removed_fraction']:>8.1%} "
                    f"{'' if r.get('removed_asked') is None else format(r['removed_asked'], '.0%'):>6} "
                    f"{r['params']['trainable']:>10,}")
    return "\n".join(rows)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protocol", choices=sorted(PROTOCOLS), help="a named protocol: its settings (PROTOCOLS) become the defaults, e.g. --protocol cpu --tasks RTE runs its RTE part")
    ap.add_argument("--out", type=Path, help="results file (default: results/finetune/<protocol or 'runs'>.jsonl; small mode: a temp folder)")
    ap.add_argument("--model", default=gatecore.OFFLINE_MODEL, help="model name/folder, or tiny-bert for a random tiny model")
    ap.add_argument("--tasks", nargs="+", default=["rotten_tomatoes"], help="GLUE names (SST-2, MRPC, RTE, CoLA, STS-B), rotten_tomatoes, csv, hf:PATH[:CONFIG]")
    ap.add_argument("--methods", nargs="+", default=["lora", "gates"], choices=METHODS, help="methods to run")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0], help="seeds")
    ap.add_argument("--lr", nargs="+", type=float, help="lr grid searched on val (default: per method, LR_GRID)")
    ap.add_argument("--head-lr", type=float, default=HEAD_LR, help="lr of the fresh task head (all methods but head)")
    ap.add_argument("--gate-lr", nargs="+", type=float, default=GATE_LR, help="lr grid of the gate parameters, searched on val")
    ap.add_argument("--lam", nargs="+", type=float, default=LAM_GRID, help="sparsity weight grid searched on val")
    ap.add_argument("--keep", nargs="+", type=float, default=KEEPS, help="keep targets, one run each (bias on): the kept fraction of the gated weights, i.e. removed_asked = 1 - keep, for every objective")
    ap.add_argument("--no-bias-keep", nargs="*", type=float, default=[], help="keep targets of extra gate runs without bias training")
    ap.add_argument("--kurtosis-keep", nargs="*", type=float, default=[], help="keep targets of extra gate runs (bias on) with the paper's kurtosis-weighted target objective")
    ap.add_argument("--kurtosis-tau", type=float, help="kurtosis weighting tau of the penalty of every gate run (default: off; --kurtosis-keep runs use %g)" % KURTOSIS_TAU)
    ap.add_argument("--objective", default=OBJECTIVE, choices=gatecore.penalty.KINDS, help="sparsity objective (docs/design.md §1)")
    ap.add_argument("--lam-warmup", type=float, default=LAM_WARMUP, help="fraction of steps over which lam ramps up from 0")
    ap.add_argument("--sigma", type=float, default=SIGMA, help="gate forward-noise scale")
    ap.add_argument("--reg-sigma", type=float, default=REG_SIGMA, help="scale inside the regulariser's Phi")
    ap.add_argument("--control", action=argparse.BooleanOptionalAction, default=CONTROL,
                    help="steer the eval-gate removed fraction to the request, exactly at the end (gatecore/sparsity_control.py)")
    ap.add_argument("--bucketed", action=argparse.BooleanOptionalAction, default=BUCKETED,
                    help="length-bucketed training batches (analysis/batching.py)")
    ap.add_argument("--epochs", type=int, help=f"training epochs (default: the protocol's per task, else {DEFAULT_EPOCHS})")
    ap.add_argument("--batch-size", type=int, default=32, help="training batch size")
    ap.add_argument("--max-len", type=int, default=128, help="max tokens per example (pairs truncated together)")
    ap.add_argument("--train-examples", type=int, help="fixed-seed train subset (default: all)")
    ap.add_argument("--val-examples", type=int, help="fixed-seed subset of the val split (default: all)")
    ap.add_argument("--dev-examples", type=int, help="fixed-seed subset of the dev split (default: all)")
    ap.add_argument("--pooling", default="mean", choices=["mean", "cls"], help="sentence representation fed to the classifier")
    ap.add_argument("--lora-r", type=int, default=8, help="LoRA rank")
    ap.add_argument("--lora-alpha", type=float, default=16, help="LoRA alpha")
    ap.add_argument("--curve-points", type=int, default=4, help="dev evaluations during training (the curve)")
    ap.add_argument("--curve-dev-examples", type=int, default=CURVE_DEV_EXAMPLES, help="fixed-seed dev subset of the curve (0 = all of dev); the end uses all of dev")
    ap.add_argument("--checkpoint-dir", default=DEFAULT_CHECKPOINTS, help="trainable-state checkpoints ('' = none)")
    ap.add_argument("--glue-dir", help="GLUE folder (default: $GLUE_DIR or data/glue)")
    ap.add_argument("--data", help="folder of train/dev CSV/TSV files (task 'csv')")
    ap.add_argument("--text-cols", nargs="+", help="text column(s) of --data / hf: tasks")
    ap.add_argument("--label-col", help="label column of --data / hf: tasks")
    ap.add_argument("--regression", action="store_true", help="--data / hf: labels are numeric scores")
    ap.add_argument("--no-compress", action="store_true", help="skip gatecore.compress of gate runs")
    ap.add_argument("--no-bench", action="store_true", help="skip the dense vs compressed latency measurement")
    ap.add_argument("--max-runs", type=int, help="stop after this many new runs (to split a sweep into chunks)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (per worker)")
    ap.add_argument("--workers", type=int, default=1, help="parallel worker processes (analysis.schedule; 1 = in this process)")
    ap.add_argument("--one-seed", nargs="*", default=[], help="methods (or gates-no-bias) run on the first seed only")
    ap.add_argument("--dry-run", action="store_true", help="list the runs, estimate the wall time from measured step times, exit")
    ap.add_argument("--quiet", action="store_true", help="no per-run progress bars")
    ap.set_defaults(**EXTRA_DEFAULTS)
    known, _ = ap.parse_known_args(argv)
    if known.protocol:  # the protocol's settings become the defaults; options given explicitly still win
        ap.set_defaults(**PROTOCOLS[known.protocol])
    args = ap.parse_args(argv)
    if args.kurtosis_tau is not None and args.objective != "target":
        ap.error(f"--kurtosis-tau weights the paper's `target` objective only; add --objective target (got {args.objective})")
    out_dir = ROOT / "results" / "finetune"
    if small_mode():  # CI / notebooks: the smallest sweep that still exercises everything, never into results/
        args.train_examples, args.val_examples, args.dev_examples, args.epochs = 32, 16, 32, 1
        out_dir = Path(tempfile.gettempdir()) / "gatecore-small"
        if args.checkpoint_dir == DEFAULT_CHECKPOINTS:
            args.checkpoint_dir = str(out_dir / "checkpoints")
    args.out = args.out or out_dir / f"{args.protocol or 'runs'}.jsonl"
    args.curve_dev_examples = args.curve_dev_examples or None
    return args


def task_sizes(args, specs) -> dict:
    """{task: (n_train, n_val, n_dev)} as the runs will see them (to order the runs and estimate their time)."""
    out = {}
    for s in specs:
        if s["task"] not in out:
            t = load_task(s["task"], glue=args.glue_dir, data_dir=args.data, text_cols=args.text_cols, label_col=args.label_col,
                          regression=args.regression, train_examples=s["train_examples"],
                          val_examples=s["val_examples"], dev_examples=s["dev_examples"])
            out[s["task"]] = (len(t.train), len(t.val), len(t.dev))
    return out


def print_plan(args, specs, todo, sizes) -> None:
    for s in todo:
        print(run_id(s), json.dumps(s))
    est = estimate(todo, sizes, args.workers, curve_points=args.curve_points)
    steps = sum(run_cost(s, sizes[s["task"]][0]) / (1.5 if s["method"] == "full" else 1.0) for s in todo)
    print(f"\nplan: {len(todo)} runs to do, {sum(grid_size(s) for s in todo)} trainings (grid points), "
          f"{steps:,.0f} training steps; epochs {dict((s['task'], s['epochs']) for s in specs)}")
    if est["wall_s"] is None:
        print(f"no time estimate: {est['source']}")
        return
    by_task = {}
    for s, t in zip(todo, est["run_s"]):
        by_task[s["task"]] = by_task.get(s["task"], 0.0) + t
    print("serial hours per task: " + ", ".join(f"{k} {v / 3600:.2f}" for k, v in by_task.items()))
    print(f"estimated wall time: {est['wall_s'] / 3600:.2f} h with --workers {args.workers} --threads {args.threads} "
          f"({est['serial_s'] / 3600:.2f} h serial); step times from {est['source']}")


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    specs = expand(args)
    done = {r["run_id"] for r in read_jsonl(args.out)}
    todo = [s for s in specs if run_id(s) not in done]
    print(f"{len(specs)} runs, {len(specs) - len(todo)} already in {args.out}, {len(todo)} to do")
    sizes = task_sizes(args, todo)
    if args.dry_run:
        print_plan(args, specs, todo, sizes)
        return 0
    argv_t = tuple(sys.argv[1:] if argv is None else argv)
    jobs = [Job(run_id(s), run_cost(s, sizes[s["task"]][0]), (s, argv_t)) for s in todo]
    errors = args.out.with_name(args.out.stem + ".errors.jsonl")
    failed = run_jobs(jobs, run_spec, args.out, args.workers, args.threads, args.device, errors_file=errors, max_runs=args.max_runs)
    ids = {run_id(s) for s in specs}
    print(summary([r for r in read_jsonl(args.out) if r["run_id"] in ids]))
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed (see {errors}); rerun the same command to redo them")
    return 0


if __name__ == "__main__":
    sys.exit(main())
