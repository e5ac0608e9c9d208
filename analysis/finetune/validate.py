"""Validate a finetuning sweep before anything runs: every option, path, task, the model and the data.

    check_options(cfg)   # numbers, names, flags: no I/O; SweepConfig.__post_init__ calls it
    validate(cfg)        # check_options + device, model (built on the meta device), every task's data read

`run_sweep` calls `validate` before a worker starts or a results file is opened, so Python callers,
notebooks and `python -m analysis.finetune` get the same checks, and a refused sweep writes nothing.
Every problem is a `ConfigError` naming the option (as its command-line flag) and the allowed values, or
a `DataError` naming the file and line (analysis/data_files.py). `cli(main, argv)` turns those into one
line on stderr and exit status 2 (`--debug`: the traceback instead). docs/design.md §5.
"""

from __future__ import annotations

import argparse
import codecs
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from analysis.data import DataError, load_task, task_key
from analysis.finetune.protocols import PROTOCOLS
from gatecore.checks import check_bool, check_int, check_positive, check_real
from gatecore.methods import GATE_METHODS, METHODS, SCHEDULES, setup_method
from gatecore.penalty import KINDS
from gatecore.pretrained import resolve_model
from gatecore.tiny import TINY_KINDS, tiny_config
from gatecore.train import AUTOCAST_DTYPES

FLOAT32 = "float32"  # --autocast's value for no autocast (undoes a protocol's)

POOLINGS = ("mean", "cls")
MIN_LEN = 4  # tokens: the special tokens of a sentence pair and one of text


class ConfigError(ValueError):
    """A sweep option has a value the sweep cannot run with; the message names the option and what is allowed."""


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _values(cfg, name: str, allow_empty: bool = False) -> Sequence:
    """A list option as a sequence (a str is one value, not a list of characters)."""
    values = getattr(cfg, name)
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ConfigError(f"{flag(name)} takes a list of values, got {values!r} ({type(values).__name__})")
    if not values and not allow_empty:
        raise ConfigError(f"{flag(name)} needs at least one value")
    if len(set(map(repr, values))) < len(values):
        raise ConfigError(f"{flag(name)} lists a value twice: {list(values)}")
    return values


def _choices(cfg, name: str, allowed, allow_empty: bool = False) -> Sequence:
    values = _values(cfg, name, allow_empty)
    bad = [v for v in values if v not in allowed]
    if bad:
        raise ConfigError(f"{flag(name)}: {bad[0]!r} is not one of {', '.join(map(str, allowed))}")
    return values


def _numbers(cfg) -> None:
    """Every number, through gatecore.checks (a message names the flag, the value and the allowed range)."""
    for name in ("lr", "gate_lr"):
        if name != "lr" or cfg.lr is not None:
            for v in _values(cfg, name):
                check_positive(flag(name), v)
    for v in _values(cfg, "lam"):
        check_real("--lam", v, low=0)
    for name in ("keep", "no_bias_keep", "kurtosis_keep"):
        for v in _values(cfg, name, allow_empty=True):
            check_real(flag(name), v, low=0, high=1, low_open=True, what="a kept fraction")
    for name in ("head_lr", "kurtosis_tau"):
        if getattr(cfg, name) is not None:
            check_positive(flag(name), getattr(cfg, name))
    for name in ("sigma", "reg_sigma", "lora_alpha"):
        check_positive(flag(name), getattr(cfg, name))
    check_real("--lam-warmup", cfg.lam_warmup, low=0, high=1, what="a fraction of the steps")
    check_real("--recovery", cfg.recovery, low=0, high=1, what="a fraction of the run's steps")
    check_real("--partial-every", cfg.partial_every, low=0, what="seconds")
    for name, low, optional in (
        ("epochs", 1, True),
        ("batch_size", 1, False),
        ("max_len", MIN_LEN, False),
        ("train_examples", 1, True),
        ("val_examples", 1, True),
        ("dev_examples", 1, True),
        ("lora_r", 1, False),
        ("curve_points", 0, False),
        ("curve_dev_examples", 0, True),
        ("max_runs", 1, True),
        ("restarts", 0, False),
        ("threads", 1, False),
        ("workers", 1, False),
    ):
        if not (optional and getattr(cfg, name) is None):
            check_int(flag(name), getattr(cfg, name), low)
    for v in _values(cfg, "seeds"):
        check_int("--seeds", v, low=0)
    for name, low in (("task_epochs", 1), ("task_train_examples", 1)):
        for task, v in getattr(cfg, name).items():
            check_int(f"{name}[{task!r}] (from --protocol)", v, low)
    for method, grid in cfg.lr_grids.items():
        if method not in METHODS or not grid:
            raise ConfigError(f"lr_grids (from --protocol): {method!r} must be a method with a non-empty lr grid")
        for v in grid:
            check_positive(f"lr_grids[{method!r}] (from --protocol)", v)


def check_options(cfg) -> None:
    """Every option of a SweepConfig, without touching a file; raises ConfigError."""
    try:
        if cfg.protocol is not None and cfg.protocol not in PROTOCOLS:
            raise ConfigError(f"--protocol: {cfg.protocol!r} is not one of {', '.join(sorted(PROTOCOLS))}")
        for v in _values(cfg, "tasks"):
            try:
                task_key(v)
            except DataError as e:
                raise ConfigError(f"--tasks: {e}") from None
        methods = _choices(cfg, "methods", METHODS)
        _choices(cfg, "one_seed", (*METHODS, "gates-no-bias", "gates-other-keeps"), allow_empty=True)
        if cfg.choices_for and not cfg.choices_from:
            raise ConfigError("--choices-for: names the methods that take --choices-from's lrs; give --choices-from")
        _choices(cfg, "choices_for", methods, allow_empty=True)
        if cfg.objective not in KINDS:
            raise ConfigError(f"--objective: {cfg.objective!r} is not one of {', '.join(KINDS)}")
        if cfg.pooling not in POOLINGS:
            raise ConfigError(f"--pooling: {cfg.pooling!r} is not one of {', '.join(POOLINGS)}")
        _numbers(cfg)
        if cfg.schedule not in SCHEDULES:
            raise ConfigError(f"--schedule: {cfg.schedule!r} is not one of {', '.join(SCHEDULES)}")
        if cfg.autocast is not None and cfg.autocast not in (*AUTOCAST_DTYPES, FLOAT32):
            raise ConfigError(f"--autocast: {cfg.autocast!r} is not one of {', '.join((*AUTOCAST_DTYPES, FLOAT32))}")
        for name in (
            "control",
            "split_range",
            "extend_grids",
            "grids_from_first_keep",
            "bucketed",
            "regression",
            "compress",
            "bench",
            "grid_on_first_seed",
            "dry_run",
            "quiet",
        ):
            check_bool(flag(name), getattr(cfg, name))
    except (ConfigError, DataError):
        raise
    except ValueError as e:  # gatecore.checks' errors (WrongType is one too), in the sweep's terms
        raise ConfigError(str(e)) from None
    if cfg.kurtosis_tau is not None and cfg.objective != "target":
        raise ConfigError(
            f"--kurtosis-tau weights the paper's `target` objective only; set --objective target "
            f"(got {cfg.objective!r})"
        )
    if set(methods) & set(GATE_METHODS) and not (cfg.keep or cfg.no_bias_keep or cfg.kurtosis_keep):
        raise ConfigError(
            "--keep: gate methods need at least one keep target (--keep, --no-bias-keep or --kurtosis-keep)"
        )
    kinds = [task_key(t) for t in cfg.tasks]
    if "csv" in kinds and not cfg.data:
        raise ConfigError("--data: task csv needs a folder of train/dev CSV/TSV files (--data DIR)")
    user = [t for t, k in zip(cfg.tasks, kinds) if k == "csv" or k.startswith("hf:")]
    if user and (not cfg.text_cols or not cfg.label_col):
        raise ConfigError(f"--text-cols and --label-col: task {user[0]} needs its text column(s) and its label column")
    if cfg.text_cols is not None and (isinstance(cfg.text_cols, str) or not 1 <= len(cfg.text_cols) <= 2):
        raise ConfigError(f"--text-cols takes one or two column names (a text, or a pair), got {cfg.text_cols!r}")
    try:
        codecs.lookup(cfg.encoding)
    except (LookupError, TypeError):
        raise ConfigError(f"--encoding: unknown encoding {cfg.encoding!r}; e.g. utf-8, latin-1, cp1252") from None


def check_device(device) -> None:
    """The device string parses and, for a GPU, one is there (CUDA is not initialised to find out)."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"--device: {device!r} is not a torch device; e.g. cpu, cuda, cuda:1") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= n:
            raise ConfigError(
                f"--device {device}: this machine has {n} CUDA device(s) visible to torch; "
                "use --device cpu" + (f" or cuda:0..{n - 1}" if n else "")
            )
    elif dev.type != "cpu":
        backend = getattr(torch, dev.type, None) or getattr(torch.backends, dev.type, None)
        if backend is None or not backend.is_available():
            raise ConfigError(f"--device {device}: no {dev.type} device here; use --device cpu")


def model_source(model: str, root: str | None) -> str:
    """What a spec's model is loaded from: a relative folder under `root` when one is given (a GPU bundle: the spec,
    hence the run id, keeps the path relative to the bundle, wherever it lies), else the model as named."""
    if root is None or model.startswith("tiny-"):
        return model
    return str(Path(root).expanduser() / model)


def check_model(cfg) -> None:
    """The model exists here (a folder, the offline model, tiny-<kind>, or a hub id when online) and every method
    can be set up on it with these options: built on the meta device from its config, no weights read."""
    if not isinstance(cfg.model, str) or not cfg.model:
        raise ConfigError(f"--model must be a model name or folder, got {cfg.model!r}")
    tiny = cfg.model.startswith("tiny-")
    if tiny and cfg.model[5:] not in TINY_KINDS:
        raise ConfigError(f"--model {cfg.model}: expected one of {', '.join('tiny-' + k for k in TINY_KINDS)}")
    try:  # the path first: transformers takes seconds to import
        path = None if tiny else resolve_model(model_source(cfg.model, cfg.root))
        from transformers import AutoConfig, AutoModelForSequenceClassification

        mcfg = tiny_config(cfg.model[5:], num_labels=2) if tiny else AutoConfig.from_pretrained(path, num_labels=2)
    except (OSError, ValueError, TypeError) as e:  # FileNotFoundError: a missing folder, or offline with a hub id
        raise ConfigError(f"--model {cfg.model}: {str(e).splitlines()[0]}") from None
    limit = getattr(mcfg, "max_position_embeddings", None)
    if limit is not None and cfg.max_len > limit:
        raise ConfigError(f"--max-len {cfg.max_len}: the model has {limit} positions; use --max-len {MIN_LEN}..{limit}")
    for method in cfg.methods:
        with torch.device("meta"):
            model = AutoModelForSequenceClassification.from_config(mcfg)
            try:
                setup_method(
                    model,
                    method,
                    lora_r=cfg.lora_r,
                    lora_alpha=cfg.lora_alpha,
                    sigma=cfg.sigma,
                    reg_sigma=cfg.reg_sigma,
                )
            except (ValueError, TypeError) as e:
                raise ConfigError(f"--methods {method} on --model {cfg.model}: {e}") from None


def validate(cfg) -> None:
    """The whole sweep (module docstring): options, paths, device, every task's data as the runs read it, the model.

    Called on a resolved config, before anything is scheduled or written; raises ConfigError or DataError.
    """
    check_options(cfg)
    if cfg.out is not None and Path(cfg.out).is_dir():
        raise ConfigError(f"--out {cfg.out}: is a folder; expected a results file (.jsonl)")
    if cfg.root is not None and not Path(cfg.root).expanduser().is_dir():
        raise ConfigError(f"--root {cfg.root}: folder not found")
    if cfg.glue_dir is not None and not Path(cfg.glue_dir).expanduser().is_dir():
        raise ConfigError(f"--glue-dir {cfg.glue_dir}: folder not found")
    if cfg.checkpoint_dir and Path(cfg.checkpoint_dir).exists() and not Path(cfg.checkpoint_dir).is_dir():
        raise ConfigError(
            f"--checkpoint-dir {cfg.checkpoint_dir}: is a file; expected a folder ('' for no checkpoints)"
        )
    if not cfg.dry_run:  # a plan may be made on another machine than the run
        check_device(cfg.device)
    for task in cfg.tasks:
        load_task(
            task,
            glue=cfg.glue_dir,
            data_dir=cfg.data,
            text_cols=cfg.text_cols,
            label_col=cfg.label_col,
            regression=cfg.regression,
            encoding=cfg.encoding,
        )
    check_model(cfg)


KNOWN_ERRORS = (ConfigError, DataError)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors are ConfigErrors (one line through `cli`) instead of usage text and exit;
    its help lists `cli`'s --debug (which `cli` takes out of argv before parsing)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show the traceback of a bad-input error"
        )

    def error(self, message: str):
        raise ConfigError(message)


def cli(main, argv=None) -> int:
    """`main(argv)`, with a known error (bad input) as `error: <message>` on one line of stderr and exit status 2;
    `--debug` anywhere in argv shows the traceback instead."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        return main([a for a in argv if a != "--debug"])
    except KNOWN_ERRORS as e:
        if debug:
            raise
        print("error: " + " ".join(str(e).split("\n")), file=sys.stderr)
        return 2
