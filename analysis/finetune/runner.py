"""One finetuning run of a sweep: its grid searched on val, the record built (docs/design.md §1-3).

For each run, the (gate_lr, lr, lam) grids are searched by the grid rule (analysis/gridsearch.py: one
dimension at a time; a choice at an edge extends the grid by a factor 3 until it is interior or at a stated
bound) and scored on the val split carved from train, never on dev; a gate setting must also remove what was
asked (|removed_got - removed_asked| <= 2 points, which the sparsity control guarantees,
gatecore/sparsity_control.py) to be chosen. The record lists every point tried (`hp_search`) and, per
dimension, whether the choice is interior, at a bound, or fixed (`grid`). The chosen
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
from analysis.constants import POINTS_SUFFIX
from analysis.data import Task, load_task
from analysis.finetune.config import SweepConfig, run_id
from analysis.finetune.encoding import encode, evaluate
from analysis.finetune.stats import training_removed, trivial_baseline
from analysis.finetune.train import build_model, measured_keep, peak_mem_mb, train
from analysis.finetune.validate import model_source
from analysis.gridsearch import FACTOR, MAX_STEPS, coordinate_search, point_key
from analysis.provenance import ROOT, append_jsonl, provenance, read_jsonl
from gatecore import sparsity_control
from gatecore.methods import GATE_METHODS

BENCH_BATCH, BENCH_LEN, BENCH_REPEATS = 32, 128, 5  # speedup: dense vs compressed forward, same process


def spec_task(spec: dict, cfg: SweepConfig) -> Task:
    """The run's task, with the spec's subsets and the config's data options."""
    return load_task(
        spec["task"],
        glue=cfg.glue_dir,
        data_dir=cfg.data,
        text_cols=cfg.text_cols,
        label_col=cfg.label_col,
        regression=cfg.regression,
        train_examples=spec["train_examples"],
        val_examples=spec["val_examples"],
        dev_examples=spec["dev_examples"],
        encoding=cfg.encoding,
    )


def run_spec(spec: dict, cfg: SweepConfig, prior: dict | None, device) -> dict:
    """One run for analysis.finetune.schedule's workers (a module-level function, as spawned workers need)."""
    progress = not cfg.quiet and mp.current_process().name == "MainProcess"
    rec = run_one(spec, cfg, device, progress, prior=prior, points_file=points_path(cfg.out) if cfg.out else None)
    return restart(rec, cfg, device, progress)


def points_path(out: Path) -> Path:
    """Where a sweep keeps each trained search point as it finishes, so that a search killed part-way resumes
    without retraining them (results/finetune/<protocol>.points.jsonl; a line per point: run_id, point, entry)."""
    return Path(out).with_name(Path(out).stem + POINTS_SUFFIX)


def partial_path(cfg: SweepConfig, rid: str, point: dict) -> Path | None:
    """Where a point in training keeps its partial checkpoint (analysis/finetune/partial.py): one file per run and
    point, <checkpoint_dir>/partial/<run_id>-<hash of the point's config>.pt; None when off."""
    if not cfg.checkpoint_dir or not cfg.partial_every:
        return None
    return Path(cfg.checkpoint_dir) / "partial" / f"{rid}-{run_id(point)}.pt"


def compressed_info(model, spec, task, dev_enc, pad_id, device, gated_dev: dict, bench: bool) -> dict:
    """Compress a copy, check its dev metric equals the gated one, and time it against the gated-free dense model."""
    from analysis.bench.latency import measure_speedup  # imported only when needed

    compressed = gatecore.compress(copy.deepcopy(model).eval())
    dev = evaluate(compressed, dev_enc, task, spec["pooling"], pad_id, device)
    seq = min(BENCH_LEN, model.config.max_position_embeddings)
    size = gatecore.size_report(model, compressed, seq=seq)
    layers = gatecore.gated_layers(model)
    kept_w = sum(compressed.get_submodule(n).weight.numel() for n in layers)
    info = {
        "params_total": size.compressed_params,
        "params_dense": size.dense_params,
        "linear_removed_fraction": 1.0 - kept_w / sum(m.out_features * m.in_features for m in layers.values()),
        "dev_main": dev[task.metric],
        "dev": dev,
        "matches_gated": dev == gated_dev,
        "size": size.as_dict(),
        "speedup_cpu": None,
        "bench": None,
    }
    if dev != gated_dev:  # the invariant of docs/design.md §3; a float32 near-tie can flip a prediction
        print(
            f"warning: compressed dev {dev} != gated dev {gated_dev} ({spec['task']}, {spec['method']})",
            file=sys.stderr,
        )
    if bench:
        dense, _ = build_model({**spec, "method": "head"}, task.num_labels)
        info["bench"] = measure_speedup(
            dense, compressed, batch=BENCH_BATCH, seq=seq, repeats=BENCH_REPEATS, device=device
        )
        info["speedup_cpu" if torch.device(device).type == "cpu" else "speedup_gpu"] = info["bench"]["speedup"]
    return info


# searched dimensions in search order: the gate lr first (it matters most), then the lr of the rest, then lam
SEARCH_DIMS = (("gate_lr_grid", "gate_lr"), ("lr_grid", "lr"), ("lam_grid", "lam"))


def search_grids(spec: dict) -> dict:
    """{dim: grid} of a run, in search order; the first value of each grid is where the search starts."""
    return {d: list(spec[g]) for g, d in SEARCH_DIMS if spec.get(g) is not None}


def entry_point(entry: dict, dims) -> dict:
    return {d: entry[d] for d in dims}


def entry_score(entry: dict) -> tuple:
    """What the search maximises: a gate setting must first have removed what was asked by training, no more
    than the tolerance short of it before any final correction (a setting that leaves the removal to the
    post-hoc correction wins on val by not sparsifying while it trains: the cliff of issue 24; an overshoot the
    correction reopened has no such edge: excluding it left cpu-base's CoLA search at an interior 0.0 where the
    grid's edge point scored best), then the val metric after every adjustment."""
    return entry.get("meets_keep", True) and training_removed(entry), entry["val_main"]


def run_one(
    spec: dict,
    cfg: SweepConfig,
    device,
    progress: bool = True,
    prior: dict | None = None,
    points_file: Path | None = None,
    rid: str | None = None,
) -> dict:
    """Search the run's grids on val by the grid rule (analysis/gridsearch.py), then build the record of the
    chosen point. `prior`: an earlier record of this run whose search points are reused, not retrained (a grid
    the rule extends); if one of them stays the choice, that record is kept and only its search grows.
    `points_file`: points of this run already trained by an interrupted call are read from it, new ones appended.
    `rid`: the run id of the record and its checkpoint (a restart keeps its run's; default: the spec's)."""
    task = spec_task(spec, cfg)
    gated = spec["method"] in GATE_METHODS
    grids = search_grids(spec)
    rid = rid or run_id(spec)
    weights = {"model": model_source(spec["model"], cfg.root)}  # where the model is read (a bundle's folder)
    old = (prior or {}).get("hp_search") or ([] if prior is None else [prior_entry(prior, grids)])
    old += [line["entry"] for line in (read_jsonl(points_file) if points_file else []) if line["run_id"] == rid]
    entries = {point_key(entry_point(e, grids)): e for e in old}
    trained = {}  # point_key -> (point, model, res, enc, pad) of the best-scoring points trained here

    def train_point(p: dict):
        point = {k: v for k, v in spec.items() if not k.endswith("_grid")} | p
        model, tok = build_model(point | weights, task.num_labels)
        pad = tok.pad_token_id if tok is not None else model.config.pad_token_id
        enc = {
            k: encode(tok, getattr(task, k), point["max_len"], model.config.vocab_size) for k in ("train", "val", "dev")
        }
        data = (enc["train"], enc["dev"], pad, device, cfg.curve_points, progress, enc["val"])
        res = train(model, point, task, *data, partial=partial_path(cfg, rid, point), partial_every_s=cfg.partial_every)
        entry = {
            "lr": point["lr"],
            "lam": point.get("lam"),
            "val_main": evaluate(model, enc["val"], task, point["pooling"], pad, device)[task.metric],
        }
        if gated:
            got = sparsity_control.removed_got(model)  # after the final correction, as are the val/dev scores
            entry.update(
                gate_lr=point["gate_lr"],
                removed_fraction=got,
                removed_asked=res.removed_asked,
                measured_keep=measured_keep(model, point["objective"]),
                correction=res.correction,
                meets_keep=abs(got - res.removed_asked) <= point.get("removed_tol", sparsity_control.TOL),
            )
        k = point_key(p)
        entries[k] = entry
        if points_file:
            append_jsonl(points_file, {"run_id": rid, "point": p, "entry": entry})
        top = max(entry_score(e) for e in entries.values())
        for other in [o for o in trained if entry_score(entries[o]) < top]:
            del trained[other]  # only the best-scoring models stay in memory
        if entry_score(entry) == top:
            trained[k] = (point, model, res, enc, pad)
        return entry_score(entry)

    known = {k: entry_score(e) for k, e in entries.items()}
    rule = {} if cfg.extend_grids else {"max_steps": 0}
    found = coordinate_search(grids, train_point, known=known, **rule)
    best = point_key(found.best)
    search = [entries[point_key(p)] for p, _ in found.tried] + [
        e for k, e in entries.items() if k not in {point_key(p) for p, _ in found.tried}
    ]
    grid_info = {
        "tried": {d: sorted({e[d] for e in search}) for d in grids},
        "line": found.grids,
        "status": found.status,
        "rule": {"factor": FACTOR, "max_steps": rule.get("max_steps", MAX_STEPS)},
    }
    if best not in trained and prior is not None and best == point_key(entry_point(prior_entry(prior, grids), grids)):
        return {
            **prior,
            "hp_search": search if len(search) > 1 else None,
            "grid": grid_info,
            "extended": {"new_points": found.new, **provenance(spec, spec["seed"], device)},
        }
    if best not in trained:  # a tie broken another way than the earlier record did: train the choice again
        train_point(found.best)
    point, model, res, enc, pad = trained[best]
    val_main = entries[best]["val_main"]
    dev = evaluate(model, enc["dev"], task, point["pooling"], pad, device)
    rec = {
        "run_id": rid,
        **provenance(point, point["seed"], device),
        "spec": spec,
        "task_info": task.info(),
        "dev": dev,
        "dev_main": dev[task.metric],
        "val_main": val_main,
        "hp_search": search if len(search) > 1 else None,
        "grid": grid_info,
        "params": gatecore.count_parameters(model).as_dict(),
        "removed_fraction": 0.0,
        "layers": None,
        "curve": res.curve,
        "compressed": None,
        "train_time_s": res.train_time_s,
        "step_time_s": res.step_time_s,
        "steps": res.steps,
        "peak_mem_mb": peak_mem_mb(device),
        "checkpoint": None,
    }
    if prior is not None:
        rec["extended"] = {"new_points": found.new, "replaces_date": prior.get("date")}
    if gated:
        report = gatecore.gate_report(model)
        rec.update(
            removed_fraction=report.removed_fraction,
            final_keep_target=res.final_keep_target,
            removed_asked=res.removed_asked,
            removed_got=report.removed_fraction,
            correction=res.correction,
            layers=[
                {k: getattr(layer, k) for k in ("name", "out_features", "in_features", "rows_kept", "cols_kept")}
                for layer in report.layers
            ],
        )
        if cfg.compress:
            rec["compressed"] = compressed_info(model, point | weights, task, enc["dev"], pad, device, dev, cfg.bench)
    if point["method"] != "full" and cfg.checkpoint_dir:
        path = Path(cfg.checkpoint_dir) / f"{rec['run_id']}.pt"
        objective = {"objective": res.objective} if res.objective else {}  # the Hessian study reads it
        gatecore.save_trainable(model, path, run_id=rec["run_id"], config=point, pooling=point["pooling"], **objective)
        rec["checkpoint"] = str(path.resolve().relative_to(ROOT)) if path.resolve().is_relative_to(ROOT) else str(path)
    return rec


def prior_entry(rec: dict, grids: dict) -> dict:
    """The search entry of a record's chosen point (records of one-point grids have no hp_search)."""
    c = rec["config"]
    for e in rec.get("hp_search") or []:
        if all(e.get(d) == c.get(d) for d in grids):
            return e
    entry = {d: c.get(d) for d in grids} | {"lr": c["lr"], "lam": c.get("lam"), "val_main": rec["val_main"]}
    if "removed_asked" in rec and rec.get("removed_asked") is not None:
        entry.update(removed_asked=rec["removed_asked"], correction=rec.get("correction"))
        entry["meets_keep"] = abs(rec["removed_fraction"] - rec["removed_asked"]) <= sparsity_control.TOL
    return entry


def needs_search(rec: dict, extend: bool = True) -> bool:
    """Whether the grid rule would train more points for this record (its choice sits at an unextended edge)."""
    grids = search_grids(rec["spec"])
    entries = rec.get("hp_search") or [prior_entry(rec, grids)]
    known = {point_key(entry_point(e, grids)): entry_score(e) for e in entries}

    def untrained(p):
        raise LookupError(p)

    try:
        coordinate_search(grids, untrained, known=known, **({} if extend else {"max_steps": 0}))
    except LookupError:
        return True
    return False


# ---- failed starts ----------------------------------------------------------------------------------------

RESTART_SEED_STEP = 1000  # restart k of seed s trains from seed s + 1000 k: no protocol's own seed
_VAL_TRIVIAL: dict[tuple, float] = {}


def val_trivial(spec: dict, cfg: SweepConfig) -> float:
    """Best val score of a constant prediction (analysis/finetune/stats.py) on the run's val split."""
    key = (spec["task"], spec["train_examples"], spec["val_examples"])
    if key not in _VAL_TRIVIAL:
        task = spec_task(spec, cfg)
        _VAL_TRIVIAL[key] = trivial_baseline(task.val.labels, task.metric)
    return _VAL_TRIVIAL[key]


def needs_restart(rec: dict, cfg: SweepConfig) -> bool:
    """A failed start with restarts left: the chosen point ended no better on val than a constant prediction
    (the failed finetuning runs of small GLUE tasks; Devlin et al. 2019 restart them, Mosbach et al. 2021 count
    them) and the record has fewer than cfg.restarts failed starts behind it."""
    return len(rec.get("failed_starts") or []) < cfg.restarts and rec["val_main"] <= val_trivial(rec["spec"], cfg)


def restart(rec: dict, cfg: SweepConfig, device, progress: bool = False) -> dict:
    """Train a failed start's chosen point again from training seed seed + 1000 k until it learns or the restarts
    are spent. The last start's record and checkpoint replace the run's, keep its run id, nominal seed and search,
    and list every failed start with its val and dev (what the restart changed, measured before and after)."""
    while needs_restart(rec, cfg):
        failed = [*(rec.get("failed_starts") or []), start_summary(rec)]
        spec = rec["spec"]
        again = spec | {g: [rec["config"][d]] for g, d in SEARCH_DIMS if spec.get(g) is not None}
        again["train_seed"] = spec["seed"] + RESTART_SEED_STEP * len(failed)
        new = run_one(again, cfg, device, progress, rid=rec["run_id"])  # its checkpoint replaces the failed one
        rec = {**new, "spec": spec, "hp_search": rec["hp_search"], "grid": rec["grid"]}
        rec["failed_starts"] = failed
    return rec


def start_summary(rec: dict) -> dict:
    """What a failed start scored, for the record that replaces it."""
    keys = ("val_main", "dev_main", "dev", "removed_fraction", "curve", "train_time_s", "date")
    return {"train_seed": rec["config"].get("train_seed", rec["seed"])} | {k: rec.get(k) for k in keys}
