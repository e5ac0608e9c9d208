"""One finetuning run of a sweep: its grid searched on val, the record built (docs/design.md §1-3).

For each run, every (lr, lam, gate_lr) of the grid is trained and scored on the val split carved from
train, never on dev; a gate setting must also remove what was asked (|removed_got - removed_asked| <= 2
points, which the sparsity control guarantees, gatecore/sparsity_control.py) to be chosen. The chosen
setting's dev metrics are reported, the whole search is recorded (the record contract of issue 6, read by
analysis/finetune/results.py). Gate runs are then compressed, checked against the gated model on dev and
timed against the dense one.
"""
from __future__ import annotations

import copy
import multiprocessing as mp
import sys
from pathlib import Path

import torch

import gatecore
from gatecore import sparsity_control
from gatecore.methods import GATE_METHODS

from analysis.data import Task, load_task
from analysis.finetune.config import SweepConfig, run_id
from analysis.finetune.train import build_model, encode, evaluate, measured_keep, peak_mem_mb, train
from analysis.provenance import ROOT, provenance

BENCH_BATCH, BENCH_LEN, BENCH_REPEATS = 32, 128, 5  # speedup: dense vs compressed forward, same process


def spec_task(spec: dict, cfg: SweepConfig) -> Task:
    """The run's task, with the spec's subsets and the config's data options."""
    return load_task(spec["task"], glue=cfg.glue_dir, data_dir=cfg.data, text_cols=cfg.text_cols,
                     label_col=cfg.label_col, regression=cfg.regression, train_examples=spec["train_examples"],
                     val_examples=spec["val_examples"], dev_examples=spec["dev_examples"], encoding=cfg.encoding)


def run_spec(spec: dict, cfg: SweepConfig, device) -> dict:
    """One run for analysis.finetune.schedule's workers (a module-level function, as spawned workers need)."""
    return run_one(spec, cfg, device, progress=not cfg.quiet and mp.current_process().name == "MainProcess")


def compressed_info(model, spec, task, dev_enc, pad_id, device, gated_dev: dict, bench: bool) -> dict:
    """Compress a copy, check its dev metric equals the gated one, and time it against the gated-free dense model."""
    from analysis.bench.latency import measure_speedup  # imported only when needed
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


def run_one(spec: dict, cfg: SweepConfig, device, progress: bool = True) -> dict:
    """Train every (lr, lam, gate_lr) of the grid, pick the best on val, and build the run's record."""
    task = spec_task(spec, cfg)
    gated = spec["method"] in GATE_METHODS
    search, best = [], None
    grid = [(lr, lam, glr) for lr in spec["lr_grid"] for lam in spec.get("lam_grid", [None])
            for glr in spec.get("gate_lr_grid", [None])]
    for lr, lam, glr in grid:
        point = {k: v for k, v in spec.items() if not k.endswith("_grid")}
        point.update(lr=lr, **({"lam": lam, "gate_lr": glr} if gated else {}))
        model, tok = build_model(point, task.num_labels)
        pad = tok.pad_token_id if tok is not None else model.config.pad_token_id
        enc = {k: encode(tok, getattr(task, k), point["max_len"], model.config.vocab_size) for k in ("train", "val", "dev")}
        res = train(model, point, task, enc["train"], enc["dev"], pad, device, cfg.curve_points, progress)
        entry = {"lr": lr, "lam": lam, "val_main": evaluate(model, enc["val"], task, point["pooling"], pad, device)[task.metric]}
        if gated:
            got = sparsity_control.removed_got(model)  # after the final correction, as are the val/dev scores
            entry.update(gate_lr=glr, removed_fraction=got, removed_asked=res.removed_asked,
                         measured_keep=measured_keep(model, point["objective"]), correction=res.correction,
                         meets_keep=abs(got - res.removed_asked) <= point.get("removed_tol", sparsity_control.TOL))
        search.append(entry)
        # gate runs: the best val among the settings that removed what was asked (if any did)
        key = (entry.get("meets_keep", True), entry["val_main"])
        if best is None or key > best[0]:
            best = (key, point, model, res, enc, pad)
        else:
            del model
    (_, val_main), point, model, res, enc, pad = best
    dev = evaluate(model, enc["dev"], task, point["pooling"], pad, device)
    rec = {"run_id": run_id(spec), **provenance(point, point["seed"], device), "spec": spec, "task_info": task.info(),
           "dev": dev, "dev_main": dev[task.metric], "val_main": val_main,
           "hp_search": search if len(search) > 1 else None, "params": gatecore.count_parameters(model).as_dict(),
           "removed_fraction": 0.0, "layers": None, "curve": res.curve, "compressed": None,
           "train_time_s": res.train_time_s, "step_time_s": res.step_time_s, "steps": res.steps,
           "peak_mem_mb": peak_mem_mb(device), "checkpoint": None}
    if gated:
        report = gatecore.gate_report(model)
        rec.update(removed_fraction=report.removed_fraction, final_keep_target=res.final_keep_target,
                   removed_asked=res.removed_asked, removed_got=report.removed_fraction, correction=res.correction,
                   layers=[{k: getattr(layer, k) for k in ("name", "out_features", "in_features", "rows_kept", "cols_kept")}
                           for layer in report.layers])
        if cfg.compress:
            rec["compressed"] = compressed_info(model, point, task, enc["dev"], pad, device, dev, cfg.bench)
    if point["method"] != "full" and cfg.checkpoint_dir:
        path = Path(cfg.checkpoint_dir) / f"{rec['run_id']}.pt"
        gatecore.save_trainable(model, path, run_id=rec["run_id"], config=point, pooling=point["pooling"])
        rec["checkpoint"] = str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)
    return rec
