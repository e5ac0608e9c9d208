"""Finetuning sweep: model x task x method x seed (x keep, bias for gates); lr/lam chosen on val.

    python -m analysis.finetune --tasks rotten_tomatoes --methods lora gates --train-examples 500
    python -m analysis.finetune --protocol cpu-fair --tasks RTE   # a named protocol's part (make experiments)
    python -m analysis.finetune --protocol cpu-converged --workers 2 --threads 1 --dry-run   # plan + wall time

From Python: `run_sweep(SweepConfig(tasks=("SST-2",), methods=("lora", "gates")))` or
`run_sweep(SweepConfig.of_protocol("cpu-fair"))` (analysis/finetune/config.py; argv is parsed here only).
One record per finished run (analysis/finetune/runner.py) is appended to results/finetune/<protocol or
'runs'>.jsonl; a rerun skips run_ids already there (the run_id hashes the run's spec, grids included), so a
killed sweep loses at most the run in flight. Runs go through analysis.finetune.schedule (longest first,
`--workers` processes, this process the one writer), as on the GPU host. docs/design.md §5.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from analysis.cli import add_options, from_args
from analysis.finetune.config import (
    GRID_FROM,
    GRIDS,
    SweepConfig,
    expand,
    inherit_choices,
    resolve,
    run_id,
    take_choices,
)
from analysis.finetune.protocols import PROTOCOLS, estimate, grid_size, run_cost
from analysis.finetune.runner import needs_restart, needs_search, run_spec, spec_task
from analysis.finetune.schedule import Job, run_jobs
from analysis.finetune.validate import FLOAT32, ArgumentParser, cli, model_source, validate
from analysis.provenance import append_jsonl, read_jsonl
from gatecore.methods import METHODS, SCHEDULES
from gatecore.penalty import KINDS
from gatecore.train import AUTOCAST_DTYPES

# the sweep's flags with a closed set of values, and the types of the values of its list flags (others: str)
CHOICES = {
    "protocol": sorted(PROTOCOLS),
    "methods": METHODS,
    "objective": KINDS,
    "schedule": list(SCHEDULES),
    "autocast": [*AUTOCAST_DTYPES, FLOAT32],
    "pooling": ["mean", "cls"],
}
ITEMS = {"seeds": int, **dict.fromkeys(("lr", "gate_lr", "lam", "keep", "no_bias_keep", "kurtosis_keep"), float)}


def summary(records: list[dict]) -> str:
    rows = [
        f"{'task':<16} {'method':<11} {'keep':>5} {'bias':>5} {'lr':>8} {'val':>6} {'dev':>6} {'removed':>8} "
        f"{'asked':>6} {'trainable':>10}"
    ]
    for r in records:
        c = r["config"]
        rows.append(
            f"{c['task']:<16} {c['method']:<11} {c.get('keep', ''):>5} {str(c.get('bias', '')):>5} "
            f"{c['lr']:>8.0e} {r['val_main']:>6.1f} {r['dev_main']:>6.1f} {r['removed_fraction']:>8.1%} "
            f"{'' if r.get('removed_asked') is None else format(r['removed_asked'], '.0%'):>6} "
            f"{r['params']['trainable']:>10,}"
        )
    return "\n".join(rows)


def build_parser() -> argparse.ArgumentParser:
    """The CLI of SweepConfig: one option per `option` field (the protocol-only fields task_epochs,
    task_train_examples, lr_grids, combo_keep come from --protocol)."""
    ap = ArgumentParser(
        prog="python -m analysis.finetune", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_options(ap, SweepConfig, CHOICES, ITEMS)
    return ap


def parse_args(argv=None) -> SweepConfig:
    """argv -> the resolved SweepConfig; a --protocol's values are the defaults, explicit options win."""
    ap = build_parser()
    known, _ = ap.parse_known_args(argv)
    if known.protocol:
        ap.set_defaults(**PROTOCOLS[known.protocol])
    try:
        return resolve(from_args(SweepConfig, ap.parse_args(argv)))
    except ValueError as e:
        ap.error(str(e))


def task_sizes(cfg: SweepConfig, specs) -> dict:
    """{task: (n_train, n_val, n_dev, mean tokens per train example)} as the runs will see them (to order the
    runs and estimate their time); the tokens are counted on up to 500 train examples with the model's tokenizer."""
    out = {}
    for s in specs:
        if s["task"] not in out:
            t = spec_task(s, cfg)
            out[s["task"]] = (len(t.train), len(t.val), len(t.dev), mean_tokens(s, t, cfg.root))
    return out


def mean_tokens(spec: dict, task, root: str | None = None, n: int = 500) -> float:
    from analysis.finetune.encoding import Encoded, encode, subset

    tok = None
    if not spec["model"].startswith("tiny-"):
        from transformers import AutoTokenizer

        from gatecore.pretrained import resolve_model

        tok = AutoTokenizer.from_pretrained(resolve_model(model_source(spec["model"], root)))
    sample = subset(Encoded(list(range(len(task.train))), list(task.train.labels)), n)  # a fixed-seed sample
    texts = [task.train.texts[i] for i in sample.ids]
    ids = encode(tok, type(task.train)(texts, [0] * len(texts)), spec["max_len"]).ids
    return sum(map(len, ids)) / max(1, len(ids))


def print_plan(cfg: SweepConfig, specs, todo, sizes, extend=(), waiting=()) -> None:
    for s in todo[: len(todo) - len(waiting)]:
        print(run_id(s), json.dumps(s))
    for s in waiting:  # a run waiting for its source's choice has no id yet; its first grid point stands in
        print("(waits)     ", json.dumps(s))
    for s in extend:
        print(run_id(s), "(grid extension or restart of a recorded run)")
    stand_in = [{k: v[:1] if k in GRIDS else v for k, v in s.items()} for s in extend]  # about one point each
    if not todo and not stand_in:
        print(f"\nplan: nothing to do: every run of the plan is in {cfg.out}")
        return
    est = estimate(todo + stand_in, sizes, cfg.workers, curve_points=cfg.curve_points, runs=cfg.out)
    steps = sum(run_cost(s, sizes[s["task"]][0]) / (1.5 if s["method"] == "full" else 1.0) for s in todo + stand_in)
    print(
        f"\nplan: {len(todo)} runs to do, {len(extend)} recorded runs to extend or restart, "
        f"{sum(grid_size(s) for s in todo + stand_in)} trainings (grid points; one per pending extension, none for extensions still to come), "
        f"{steps:,.0f} training steps; epochs {dict((s['task'], s['epochs']) for s in specs)}"
    )
    if est["wall_s"] is None:
        print(f"no time estimate: {est['source']}")
        return
    for key in ("task", "method"):
        hours = {}
        for s, t in zip(todo + stand_in, est["run_s"]):
            hours[s[key]] = hours.get(s[key], 0.0) + t / 3600
        print(f"serial hours per {key}: " + ", ".join(f"{k} {v:.2f}" for k, v in hours.items()))
    print(
        f"estimated wall time: {est['wall_s'] / 3600:.2f} h with --workers {cfg.workers} --threads {cfg.threads} "
        f"({est['serial_s'] / 3600:.2f} h serial; extensions counted as above); step times from {est['source']}"
    )


def reusable(cfg: SweepConfig, specs: list[dict], recs: list[dict]) -> list[dict]:
    """The records of `cfg.reuse` files whose run ids these specs need and `recs` lack (the same spec, so the
    same training), each saying where it came from (`reused_from`)."""
    have, want, out = {r["run_id"] for r in recs}, {run_id(s) for s in specs}, []
    for name in cfg.reuse:
        path = Path(name) if Path(name).suffix else cfg.out.parent / f"{name}.jsonl"
        for r in read_jsonl(path):
            if r["run_id"] in want - have:
                out.append({**r, "reused_from": path.name})
                have.add(r["run_id"])
    return out


def plan(cfg: SweepConfig, specs: list[dict]) -> tuple[list, list, list, dict, list]:
    """(todo, extend, waiting, keys, ready): specs to run, recorded runs whose grid the rule extends or whose
    failed start is restarted (cfg.restarts; with their records), specs waiting for a source run, {run_id:
    spec_key} of the ready marked specs, and every spec whose grids are known (run or not). Reusable records
    (cfg.reuse) are copied into cfg.out first (not in a dry run, which only counts them)."""
    recs = read_jsonl(cfg.out)
    complete = lambda rec: not needs_search(rec, cfg.extend_grids) and not needs_restart(rec, cfg)  # noqa: E731
    held = []
    if cfg.choices_from:
        src = [r for r in read_jsonl(choices_path(cfg)) if complete(r)]
        specs, held = take_choices(specs, src, cfg.choices_for)
    while True:  # a reused first seed can make its later seeds ready, and reusable in turn
        ready, waiting, keys = inherit_choices(specs, recs, complete)
        new = reusable(cfg, ready, recs) if cfg.reuse else []
        if not new:
            break
        for r in new if not cfg.dry_run else []:
            append_jsonl(cfg.out, r)
        recs += new
    by_id = {r["run_id"]: r for r in recs}
    todo = [s for s in ready if run_id(s) not in by_id]
    extend = [(s, by_id[run_id(s)]) for s in ready if run_id(s) in by_id and not complete(by_id[run_id(s)])]
    return todo, extend, waiting + held, keys, ready


def choices_path(cfg: SweepConfig) -> Path:
    return Path(cfg.choices_from) if Path(cfg.choices_from).suffix else cfg.out.parent / f"{cfg.choices_from}.jsonl"


def run_sweep(cfg: SweepConfig, extra: dict | None = None) -> Path:
    """Run (or with dry_run, plan) every run of the sweep not yet in its results file; returns that file.
    A run marked to train another run's choice (later seeds: the first seed's; with grids_from_first_keep, other
    gate variants: the first keep target's) waits for that run: it starts as soon as that record is written (the
    plan is redone after every finished run), in this call or, if it is cut short by --max-runs, a later one. A
    recorded run whose choice sits at an edge the grid rule would extend is searched further, reusing its recorded
    points, and its record is replaced. `extra`: fields added to every record this call writes (the GPU driver:
    the bundle the runs came from)."""
    cfg = resolve(cfg)
    validate(cfg)  # everything, the data included, before anything is scheduled or written
    torch.set_num_threads(cfg.threads)
    specs = expand(cfg)
    todo, extend, waiting, keys, _ = plan(cfg, specs)
    print(
        f"{len(specs)} runs, {len(specs) - len(todo) - len(waiting)} already in {cfg.out}, "
        f"{len(todo) + len(waiting)} to do"
        + (f" ({len(waiting)} wait for their source's grid choice)" if waiting else "")
        + (
            f", {len(extend)} recorded runs whose grid the rule extends or whose failed start restarts"
            if extend
            else ""
        )
    )
    if cfg.dry_run:  # a waiting run trains one grid point: its first one stands in for the cost
        stand_in = [{k: v[:1] if k in GRIDS else v for k, v in s.items() if k != GRID_FROM} for s in waiting]
        plan_specs = todo + stand_in
        print_plan(
            cfg,
            specs,
            plan_specs,
            task_sizes(cfg, plan_specs + [s for s, _ in extend]),
            [s for s, _ in extend],
            waiting,
        )
        return cfg.out
    errors = cfg.out.with_name(cfg.out.stem + ".errors.jsonl")
    sizes = {}

    def jobs(todo, extend) -> list[Job]:  # an extension trains its new points only: about one point's cost each
        new = todo + [s for s, _ in extend]
        sizes.update(task_sizes(cfg, [s for s in new if s["task"] not in sizes]))
        out = [Job(run_id(s), run_cost(s, sizes[s["task"]][0]), (s, cfg, None)) for s in todo]
        return out + [
            Job(run_id(s), run_cost(s, sizes[s["task"]][0]) / grid_size(s), (s, cfg, rec), replace=True)
            for s, rec in extend
        ]

    def refill() -> list[Job]:  # re-planned after every finished run: a source's record readies its waiting runs
        todo, extend, _, new_keys, _ = plan(cfg, specs)
        keys.update(new_keys)
        return jobs(todo, extend)

    def annotate(rec):
        rec.update(extra or {})
        if keys.get(rec["run_id"]):
            rec["spec_key"] = keys[rec["run_id"]]

    failed = run_jobs(
        jobs(todo, extend),
        run_spec,
        cfg.out,
        cfg.workers,
        cfg.threads,
        cfg.device,
        errors_file=errors,
        max_runs=cfg.max_runs,
        annotate=annotate,
        refill=refill,
    )
    ids = {run_id(s) for s in plan(cfg, specs)[4]}
    print(summary([r for r in read_jsonl(cfg.out) if r["run_id"] in ids]))
    if failed:
        raise RuntimeError(f"{len(failed)} run(s) failed (see {errors}); rerun the same command to redo them")
    return cfg.out


def run_command(argv) -> int:
    run_sweep(parse_args(argv))
    return 0


def main(argv=None) -> int:
    """The command line; bad input ends in one line `error: ...` and exit status 2 (analysis/finetune/validate.py)."""
    return cli(run_command, argv)
