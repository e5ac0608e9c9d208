"""The finetuning sweep's typed config and its run specs (docs/design.md §1-2, §5).

`SweepConfig` is everything one sweep needs, frozen; `python -m analysis.finetune` parses argv into it
(analysis/finetune/sweep.py), notebooks and the GPU protocol driver build it directly. A named protocol
(analysis/finetune/protocols.py) is a set of field values: `SweepConfig.of_protocol("cpu", tasks=("RTE",))`.

`expand(cfg)` lists the sweep's run specs: plain dicts of JSON values, hashed by `run_id` (the run ids of
the committed results depend on their exact keys and values, so the spec stays a dict). `resolve(cfg)`
fills what depends on the environment: the default results file, and small mode (GATECORE_SMALL=1).
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

from analysis.finetune.protocols import DEFAULT_EPOCHS, PROTOCOLS
from analysis.finetune.validate import check_options
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
SMALL = dict(train_examples=32, val_examples=16, dev_examples=32, epochs=1)  # small mode (CI, notebooks)
SMALL_DIR = Path(tempfile.gettempdir()) / "gatecore-small"


@dataclass(frozen=True)
class SweepConfig:
    """One sweep: model x tasks x methods x seeds (x keep targets, bias on/off for gates); see the CLI help."""

    protocol: str | None = None  # the named protocol these values came from (names the results file)
    out: Path | None = None  # results file; None: results/finetune/<protocol or 'runs'>.jsonl
    model: str = OFFLINE_MODEL  # name/folder, or tiny-bert for a random tiny model
    root: str | None = None  # folder a relative model folder is read from (a GPU bundle); not in run ids
    tasks: tuple = ("rotten_tomatoes",)
    methods: tuple = ("lora", "gates")
    seeds: tuple = (0,)
    lr: tuple | None = None  # lr grid for every method; None: lr_grids, else LR_GRID
    head_lr: float | None = HEAD_LR
    gate_lr: tuple = GATE_LR  # gate-parameter lr grid
    lam: tuple = LAM_GRID  # sparsity-weight grid
    keep: tuple = KEEPS  # keep targets of gate runs with bias training
    no_bias_keep: tuple = ()  # keep targets of gate runs without bias training
    kurtosis_keep: tuple = ()  # keep targets of gate runs with the kurtosis-weighted target objective
    combo_keep: tuple | None = None  # keep targets of gates+lora runs (bias on); None: `keep`
    kurtosis_tau: float | None = None  # kurtosis weighting of every gate run (target objective only)
    objective: str = OBJECTIVE
    lam_warmup: float = LAM_WARMUP
    sigma: float = SIGMA
    reg_sigma: float = REG_SIGMA
    control: bool = CONTROL
    split_range: bool = True  # the controller also raises lam where the knob alone cannot reach the request
    recovery: float = RECOVERY  # 0 = none; else steps (x the run's) after a correction changing > 1% of gates
    schedule: str = "linear"  # lr after warm-up: linear decay to 0, or constant (the paper's shape)
    extend_grids: bool = True  # the grid rule: a choice at a grid edge extends that grid (analysis/gridsearch.py)
    grids_from_first_keep: bool = False  # other gate variants train the lrs the first keep target's run chose
    reuse: tuple = ()  # results files (names in results/finetune/) whose records of identical runs are copied, not rerun
    choices_from: str | None = None  # results file whose first-seed runs' lr choices these runs train (no search)
    bucketed: bool = BUCKETED
    epochs: int | None = None  # None: task_epochs, else DEFAULT_EPOCHS
    task_epochs: dict = field(default_factory=dict)
    batch_size: int = 32
    max_len: int = 128
    train_examples: int | None = None  # None: task_train_examples, else all
    task_train_examples: dict = field(default_factory=dict)
    val_examples: int | None = None
    dev_examples: int | None = None
    pooling: str = "mean"
    lora_r: int = 8
    lora_alpha: float = 16
    lr_grids: dict = field(default_factory=dict)  # per-method lr grids (a protocol's)
    one_seed: tuple = ()  # methods (or "gates-no-bias") run on the first seed only
    grid_on_first_seed: bool = False  # later seeds train the grid point the first seed chose on val
    curve_points: int = 4
    curve_dev_examples: int | None = CURVE_DEV_EXAMPLES  # 0 or None: all of dev
    checkpoint_dir: str = DEFAULT_CHECKPOINTS  # '' = no checkpoints
    glue_dir: str | None = None
    data: str | None = None  # folder of train/dev CSV/TSV files (task 'csv')
    text_cols: tuple | None = None
    encoding: str = "utf-8"  # of the --data files
    label_col: str | None = None
    regression: bool = False
    compress: bool = True  # gatecore.compress each gate run and check it
    bench: bool = True  # time dense vs compressed
    max_runs: int | None = None
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    threads: int = 2
    workers: int = 1
    dry_run: bool = False
    quiet: bool = False

    @classmethod
    def of_protocol(cls, name: str, **overrides) -> SweepConfig:
        """The named protocol's values, then `overrides` (as its command line would give them)."""
        return frozen(cls, {"protocol": name, **PROTOCOLS[name], **overrides})

    def __post_init__(self):
        check_options(self)  # every number, name and flag, before the config exists (analysis/finetune/validate.py)


def frozen(cls, values: dict):
    """cls(**values) with list values as tuples (the config is hashable where it matters and cannot drift)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def defaults() -> dict:
    """{field: default} of SweepConfig (the CLI's defaults)."""
    base = SweepConfig()
    return {f.name: getattr(base, f.name) for f in fields(SweepConfig)}


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
                if cfg.control and cfg.recovery:
                    base.update(recovery=cfg.recovery, recovery_min_changed=RECOVERY_MIN_CHANGED)
                variants = [dict(keep=k, bias=True) for k in cfg.keep]
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


def take_choices(specs: list[dict], records: list[dict]) -> tuple[list[dict], list[dict]]:
    """(ready, waiting): each spec's grids become the values its counterpart (choice_key) chose on its first seed
    in `records` (another protocol's results); it names that run (`grid_from`). No counterpart yet: waiting."""
    first = {}
    for r in records:
        if not r["spec"].get("grid_from"):  # a first-seed (searching) run
            first.setdefault(choice_key(r["config"]), r)
    ready, waiting = [], []
    for s in specs:
        rec = first.get(choice_key(s))
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
