"""The finetuning sweep's typed config and its run specs (docs/design.md §1-2, §5).

`SweepConfig` is everything one sweep needs, frozen; `python -m analysis.finetune` parses argv into it
(analysis/finetune/sweep.py), notebooks and the GPU protocol driver build it directly. A named protocol
(analysis/finetune/protocols.py) is a set of field values: `SweepConfig.of_protocol("cpu", tasks=("RTE",))`.

`expand(cfg)` lists the sweep's run specs: plain dicts of JSON values, hashed by `run_id` (the run ids of
the committed results depend on their exact keys and values, so the spec stays a dict). `resolve(cfg)`
fills what depends on the environment: the default results file, and small mode (GATECORE_SMALL=1).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from analysis.cli import option
from analysis.finetune.protocols import DEFAULT_EPOCHS, PROTOCOLS
from analysis.finetune.validate import FLOAT32, check_options
from analysis.provenance import ROOT, small_mode
from gatecore import defaults, sparsity_control
from gatecore.methods import GATE_METHODS
from gatecore.pretrained import OFFLINE_MODEL
from gatecore.sparsity_control import KD, LAM_GAIN, LAM_MAX, WINDOW

# defaults, visible: per-method lr grids (searched on val), gate settings (docs/design.md §1)
LR_GRID = {"full": [1e-4], "lora": [1e-3], "bias": [1e-3], "head": [1e-3, 1e-2], "gates": [1e-3], "gates+lora": [1e-3]}
# the gate settings of a user's sweep are the library's defaults (gatecore/defaults.py), as one-value grids
HEAD_LR = defaults.HEAD_LR  # the fresh task head of every method but `head` (whose lr is its grid); None = lr
GATE_LR = (defaults.GATE_LR,)
LAM_GRID = (defaults.LAM,)
KEEPS = (round(1 - defaults.REMOVED, 10),)  # keep 70% of the gated weights, i.e. ask for 30% removed
OBJECTIVE = defaults.OBJECTIVE
SIGMA, REG_SIGMA = defaults.SIGMA, defaults.REG_SIGMA
LAM_WARMUP = defaults.LAM_WARMUP
CONTROL = True  # steer the removed fraction to the request (gatecore/sparsity_control.py)
BUCKETED = True  # length-bucketed training batches (analysis/finetune/batching.py)
CURVE_DEV_EXAMPLES = 500  # the dev curve along training uses this fixed-seed dev subset; the end, all of dev
KURTOSIS_TAU = 100.0  # the paper's tau, for the kurtosis_keep runs when kurtosis_tau is not given
RECOVERY = 0.1  # recovery steps after a correction that changed > 1% of the gates, x the run's steps
DEFAULT_CHECKPOINTS = str(ROOT / "checkpoints")  # git-ignored
PARTIAL_EVERY_S = 600.0  # seconds between partial checkpoints of a point in training (analysis/finetune/partial.py)
SMALL = dict(train_examples=32, val_examples=16, dev_examples=32, epochs=1)  # small mode (CI, notebooks)
SMALL_DIR = Path(tempfile.gettempdir()) / "gatecore-small"


@dataclass(frozen=True)
class SweepConfig:
    """One sweep: model x tasks x methods x seeds (x keep targets, bias on/off for gates). Each `option` field is
    a flag of `python -m analysis.finetune` (analysis/finetune/sweep.py); the other fields come from a protocol."""

    protocol: str | None = option(
        None,
        "a named protocol: its settings (PROTOCOLS) become the defaults, e.g. --protocol cpu-fair --tasks RTE runs "
        "its RTE part; it names the results file",
    )
    out: Path | None = option(
        None, "results file; None: results/finetune/<protocol or 'runs'>.jsonl (small mode: a temp folder)"
    )
    model: str = option(OFFLINE_MODEL, "model name/folder, or tiny-bert for a random tiny model")
    root: str | None = option(
        None, "folder a relative --model folder is read from (a GPU bundle: run ids keep the relative path)"
    )
    tasks: tuple = option(
        ("rotten_tomatoes",), "GLUE names (SST-2, MRPC, RTE, CoLA, STS-B), rotten_tomatoes, csv, hf:PATH[:CONFIG]"
    )
    methods: tuple = option(("lora", "gates"), "methods to run")
    seeds: tuple = option((0,), "seeds")
    lr: tuple | None = option(None, "lr grid searched on val; None: the protocol's per method, else LR_GRID")
    head_lr: float | None = option(HEAD_LR, "lr of the fresh task head (all methods but head); None: lr")
    gate_lr: tuple = option(GATE_LR, "lr grid of the gate parameters, searched on val")
    lam: tuple = option(LAM_GRID, "sparsity weight grid searched on val")
    keep: tuple = option(
        KEEPS,
        "keep targets, one run each (bias on): the kept fraction of the gated weights, i.e. removed_asked = "
        "1 - keep, for every objective",
    )
    no_bias_keep: tuple = option((), "keep targets of extra gate runs without bias training", nargs="*")
    kurtosis_keep: tuple = option(
        (), "keep targets of extra gate runs (bias on) with the paper's kurtosis-weighted target objective", nargs="*"
    )
    combo_keep: tuple | None = None  # keep targets of gates+lora runs (bias on); None: `keep`
    kurtosis_tau: float | None = option(
        None,
        f"kurtosis weighting tau of the penalty of every gate run (target objective only); None: off "
        f"(--kurtosis-keep runs use {KURTOSIS_TAU:g})",
    )
    objective: str = option(OBJECTIVE, "sparsity objective (docs/design.md §1)")
    lam_warmup: float = option(LAM_WARMUP, "fraction of steps over which lam ramps up from 0")
    sigma: float = option(SIGMA, "gate forward-noise scale")
    reg_sigma: float = option(REG_SIGMA, "scale inside the regulariser's Phi")
    control: bool = option(
        CONTROL,
        "steer the eval-gate removed fraction to the request, exactly at the end (gatecore/sparsity_control.py)",
    )
    split_range: bool = option(True, "the controller raises lam where the knob alone cannot reach the request")
    control_reset: bool = option(
        defaults.CONTROL_RESET, "split range: lam back to 1 as soon as the removal reaches the request (less overshoot)"
    )
    control_recenter: bool = option(
        defaults.CONTROL_RECENTER,
        "integral back to 0 once the removal falls to the request under a reopening push (no windup)",
    )
    recovery: float = option(
        RECOVERY,
        "after a final correction that changed > 1%% of the gates: train this fraction of the run's steps more "
        "with the gate pattern frozen (0 = never)",
    )
    schedule: str = option("linear", "lr after the 6%% warm-up: linear decay to 0, or constant (the paper's shape)")
    autocast: str | None = option(
        None,
        "train under torch.autocast in this dtype (bfloat16: 1.4-2.7x faster steps on a CPU with AMX, "
        "results/bench/autocast_*.json); parameters and evaluation stay float32; float32 or None: float32 "
        "throughout (float32 undoes a protocol's autocast)",
    )
    extend_grids: bool = option(
        True,
        "the grid rule: a choice at a grid edge extends that grid x3 until interior or at a bound "
        "(analysis/gridsearch.py)",
    )
    restarts: int = option(
        0, "retrain a failed start (val no better than a constant prediction) from a new seed, N times"
    )
    grids_from_first_keep: bool = option(
        False,
        "other gate variants (keep targets, no bias) train the lrs the first --keep run chose",
        action=argparse.BooleanOptionalAction,
    )
    reuse: tuple = option(
        (),
        "results files (names in results/finetune/ or paths) whose records of identical runs are copied instead "
        "of rerun",
        nargs="*",
    )
    choices_from: str | None = option(
        None,
        "results file (a name in results/finetune/ or a path) whose first-seed lr choices these runs train instead "
        "of searching",
    )
    choices_for: tuple = option(
        (), "the methods whose lrs come from --choices-from (none named: every method); the others search", nargs="*"
    )
    bucketed: bool = option(BUCKETED, "length-bucketed training batches (analysis/finetune/batching.py)")
    epochs: int | None = option(None, f"training epochs; None: the protocol's per task, else {DEFAULT_EPOCHS}")
    task_epochs: dict = field(default_factory=dict)
    batch_size: int = option(32, "training batch size")
    max_len: int = option(128, "max tokens per example (pairs truncated together)")
    train_examples: int | None = option(None, "fixed-seed train subset; None: the protocol's per task, else all")
    task_train_examples: dict = field(default_factory=dict)
    val_examples: int | None = option(None, "fixed-seed subset of the val split; None: all")
    dev_examples: int | None = option(None, "fixed-seed subset of the dev split; None: all")
    pooling: str = option("mean", "sentence representation fed to the classifier")
    lora_r: int = option(8, "LoRA rank")
    lora_alpha: float = option(16, "LoRA alpha")
    lr_grids: dict = field(default_factory=dict)  # per-method lr grids (a protocol's)
    one_seed: tuple = option(
        (),
        "methods (or gates-no-bias, gates-other-keeps: keep targets after the first) run on the first seed only",
        nargs="*",
    )
    grid_on_first_seed: bool = option(
        False,
        "search the lr/lam/gate-lr grids on the first seed only; later seeds train the point it chose on val",
        action=argparse.BooleanOptionalAction,
    )
    curve_points: int = option(4, "dev evaluations during training (the curve)")
    curve_dev_examples: int | None = option(
        CURVE_DEV_EXAMPLES, "fixed-seed dev subset of the curve (0 or None: all of dev); the end uses all of dev"
    )
    checkpoint_dir: str = option(DEFAULT_CHECKPOINTS, "trainable-state checkpoints ('' = none)")
    partial_every: float = option(
        PARTIAL_EVERY_S,
        "seconds between partial checkpoints of a point in training (<checkpoint-dir>/partial/): a rerun after a "
        "kill resumes the point from its last one, to the same result (0 = none)",
    )
    glue_dir: str | None = option(None, "GLUE folder; None: $GLUE_DIR or data/glue")
    data: str | None = option(None, "folder of train/dev CSV/TSV files (task 'csv')")
    text_cols: tuple | None = option(None, "text column(s) of --data / hf: tasks")
    encoding: str = option("utf-8", "text encoding of the --data files")
    label_col: str | None = option(None, "label column of --data / hf: tasks")
    regression: bool = option(False, "--data / hf: labels are numeric scores")
    compress: bool = option(True, "gatecore.compress each gate run and check it (--no-compress: skip)")
    bench: bool = option(True, "time dense vs compressed (--no-bench: skip)")
    max_runs: int | None = option(None, "stop after this many new runs (to split a sweep into chunks); None: all")
    device: str = option("cuda" if torch.cuda.is_available() else "cpu", "torch device (cuda if available, else cpu)")
    threads: int = option(2, "torch CPU threads (per worker)")
    workers: int = option(1, "parallel worker processes (analysis.finetune.schedule; 1 = in this process)")
    dry_run: bool = option(False, "list the runs, estimate the wall time from measured step times, exit")
    quiet: bool = option(False, "no per-run progress bars")

    @classmethod
    def of_protocol(cls, name: str, **overrides) -> SweepConfig:
        """The named protocol's values, then `overrides` (as its command line would give them)."""
        return frozen(cls, {"protocol": name, **PROTOCOLS[name], **overrides})

    def __post_init__(self):
        check_options(self)  # every number, name and flag, before the config exists (analysis/finetune/validate.py)


def frozen(cls, values: dict):
    """cls(**values) with list values as tuples (the config is hashable where it matters and cannot drift)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def resolve(cfg: SweepConfig) -> SweepConfig:
    """Small mode (the smallest sweep that still exercises everything, never into results/) and the
    default results file; idempotent."""
    out_dir, changes = ROOT / "results" / "finetune", {}
    if small_mode():
        out_dir, changes = SMALL_DIR, dict(SMALL)
        if cfg.checkpoint_dir == DEFAULT_CHECKPOINTS:
            changes["checkpoint_dir"] = str(SMALL_DIR / "checkpoints")
    changes["out"] = Path(cfg.out) if cfg.out else out_dir / f"{cfg.protocol or 'runs'}.jsonl"
    changes["curve_dev_examples"] = cfg.curve_dev_examples or None
    return replace(cfg, **changes)


def run_id(spec: dict) -> str:
    return hashlib.sha1(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def expand(cfg: SweepConfig) -> list[dict]:
    """Every run spec of the sweep; lr/lam grids stay in the spec (what is chosen is recorded beside it)."""
    specs = []
    for task in cfg.tasks:
        for i, seed in enumerate(cfg.seeds):
            for method in cfg.methods:
                if i > 0 and method in cfg.one_seed:
                    continue
                base = dict(
                    model=cfg.model,
                    task=task,
                    method=method,
                    seed=seed,
                    epochs=cfg.epochs or cfg.task_epochs.get(task, DEFAULT_EPOCHS),
                    batch_size=cfg.batch_size,
                    max_len=cfg.max_len,
                    train_examples=cfg.train_examples or cfg.task_train_examples.get(task),
                    val_examples=cfg.val_examples,
                    dev_examples=cfg.dev_examples,
                    pooling=cfg.pooling,
                    lr_grid=list(cfg.lr or cfg.lr_grids.get(method) or LR_GRID[method]),
                    head_lr=None if method == "head" else cfg.head_lr,
                    bucketed=cfg.bucketed,
                    curve_dev_examples=cfg.curve_dev_examples,
                )
                if cfg.schedule != "linear":  # new keys only when set, so the run ids of earlier runs stay
                    base.update(schedule=cfg.schedule)
                if cfg.autocast not in (None, FLOAT32):  # likewise
                    base.update(autocast=cfg.autocast)
                if method in ("lora", "gates+lora"):
                    base.update(lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha)
                if method not in GATE_METHODS:
                    specs.append(base)
                    continue
                base.update(
                    objective=cfg.objective,
                    lam_grid=list(cfg.lam),
                    lam_warmup=cfg.lam_warmup,
                    sigma=cfg.sigma,
                    reg_sigma=cfg.reg_sigma,
                    gate_lr_grid=list(cfg.gate_lr),
                    control=cfg.control,
                    control_every=sparsity_control.EVERY,
                    control_kp=sparsity_control.KP,
                    control_ki=sparsity_control.KI,
                    control_freeze=sparsity_control.FREEZE,
                    removed_tol=sparsity_control.TOL,
                )
                if cfg.kurtosis_tau is not None:  # only when set, so other run ids do not change
                    base.update(kurtosis_tau=cfg.kurtosis_tau)
                if cfg.control and cfg.split_range:  # likewise
                    base.update(
                        control_lam_gain=LAM_GAIN, control_window=WINDOW, control_lam_max=LAM_MAX, control_kd=KD
                    )
                    if cfg.control_reset:  # only when set, so other run ids do not change
                        base.update(control_reset=True)
                if cfg.control and cfg.control_recenter:  # likewise
                    base.update(control_recenter=True)
                if cfg.control and cfg.recovery:
                    base.update(recovery=cfg.recovery, recovery_min_changed=RECOVERY_MIN_CHANGED)
                keeps = cfg.keep if i == 0 or "gates-other-keeps" not in cfg.one_seed else cfg.keep[:1]
                variants = [dict(keep=k, bias=True) for k in keeps]
                if method == "gates+lora" and cfg.combo_keep is not None:
                    specs += [{**base, "keep": k, "bias": True} for k in cfg.combo_keep]
                    continue
                if i == 0 or "gates-no-bias" not in cfg.one_seed:  # without biases the lr grid has nothing to train
                    variants += [dict(keep=k, bias=False, lr_grid=base["lr_grid"][:1]) for k in cfg.no_bias_keep]
                variants += [
                    dict(keep=k, bias=True, objective="target", kurtosis_tau=cfg.kurtosis_tau or KURTOSIS_TAU)
                    for k in cfg.kurtosis_keep
                ]  # the paper's kurtosis-weighted objective is `target`
                specs += [{**base, **v} for v in variants]
    if cfg.grids_from_first_keep and cfg.keep:  # other gate variants of the first seed: the first keep's choice
        specs = [_mark_first_keep(s, specs, cfg.keep[0]) if s["seed"] == cfg.seeds[0] else s for s in specs]
    if cfg.grid_on_first_seed:  # marked here, resolved against the first seed's record by inherit_choices
        specs = [{**s, GRID_FROM: {"seed": cfg.seeds[0]}} if s["seed"] != cfg.seeds[0] else s for s in specs]
    return specs


def choice_key(config: dict) -> tuple:
    """What makes a run of one protocol the counterpart of a run of another, for `choices_from`."""
    return tuple(config.get(k) for k in ("model", "task", "method", "keep", "bias", "kurtosis_tau", "objective"))


def take_choices(specs: list[dict], records: list[dict], methods=()) -> tuple[list[dict], list[dict]]:
    """(ready, waiting): each spec's grids become the values its counterpart (choice_key) chose on its first seed
    in `records` (another protocol's results); it names that run (`grid_from`). A marked spec without a
    counterpart (a keep target the other protocol lacks) takes its source's, following the marks of `specs`,
    so it trains what its source trains. No counterpart yet: waiting. With `methods`, the specs of other methods
    pass unchanged (they search)."""
    first = {}
    for r in records:
        if not r["spec"].get("grid_from"):  # a first-seed (searching) run
            first.setdefault(choice_key(r["config"]), r)
    by_content = {run_id(_unmarked(t)): t for t in specs}

    def counterpart(s: dict | None) -> dict | None:
        while s is not None:
            if (rec := first.get(choice_key(s))) is not None or GRID_FROM not in s:
                return rec
            s = by_content.get(run_id(_unmarked(s) | s[GRID_FROM]))  # the run this one trains the choice of
        return None

    ready, waiting = [], []
    for s in specs:
        if methods and s["method"] not in methods:
            ready.append(s)
            continue
        rec = counterpart(s)
        if rec is None:
            waiting.append(s)
            continue
        ready.append(s | {g: [rec["config"][k]] for g, k in GRIDS.items() if g in s} | {"grid_from": rec["run_id"]})
    return ready, waiting


def _mark_first_keep(s: dict, specs: list[dict], keep: float) -> dict:
    """A gate variant (other keep, no bias) marked to train what the same method's `keep` run chose."""
    if s["method"] not in GATE_METHODS or s.get("kurtosis_tau") is not None or (s["keep"], s["bias"]) == (keep, True):
        return s
    source = next(
        (
            t
            for t in specs
            if (t["task"], t["method"], t["seed"], t.get("keep"), t.get("bias"))
            == (s["task"], s["method"], s["seed"], keep, True)
            and t.get("kurtosis_tau") is None
        ),
        None,
    )
    if source is None:
        return s
    return {**s, GRID_FROM: {k: v for k, v in source.items() if s.get(k) != v}}


RECOVERY_MIN_CHANGED = 0.01
GRID_FROM = "grid_source"  # a spec's mark: its grids come from the choice of the run these overrides name
GRIDS = {"lr_grid": "lr", "lam_grid": "lam", "gate_lr_grid": "gate_lr"}


def spec_key(spec: dict) -> str:
    """The id of a spec as expand() wrote it (marks included); equal to run_id for unmarked specs."""
    return run_id(spec)


def _unmarked(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k != GRID_FROM}


def inherit_choices(specs: list[dict], records: list[dict], complete=lambda rec: True) -> tuple[list, list, dict]:
    """(ready, waiting, keys): a spec marked by expand becomes ready once the run its mark names (the same spec with
    the mark's overrides: the first seed, or the first keep target) is recorded and `complete` (its grid
    search done): its grids shrink to the point that run chose on val, and it names that run (`grid_from`).
    Unmarked specs pass through. A run's id hashes the resolved spec, so it says what was trained; a record
    stores the key of its marked spec (`spec_key`, given in `keys` by run id) so marked runs can be sources too."""
    by_key = {r.get("spec_key", r["run_id"]): r for r in records}
    by_content = {run_id(_unmarked(t)): t for t in specs}
    ready, waiting, keys = [], [], {}
    for s in specs:
        if GRID_FROM not in s:
            ready.append(s)
            continue
        source = by_content.get(run_id(_unmarked(s) | s[GRID_FROM]))
        if source is None:
            raise ValueError(f"no run in this sweep matches the grid source {s[GRID_FROM]} of {_unmarked(s)}")
        rec = by_key.get(spec_key(source))
        if rec is None or not complete(rec):
            waiting.append(s)
            continue
        chosen = {g: [rec["config"][k]] for g, k in GRIDS.items() if g in s}
        ready.append(_unmarked(s) | chosen | {"grid_from": rec["run_id"]})
        keys[run_id(ready[-1])] = spec_key(s)
    return ready, waiting, keys
