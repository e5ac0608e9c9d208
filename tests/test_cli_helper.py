"""analysis.cli: a frozen config's fields become its command line, and the command line gives the config back."""

from __future__ import annotations  # the helper reads annotations as strings, as in every analysis module

import argparse
import dataclasses
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from analysis.bench.batching import BatchingBenchConfig
from analysis.bench.hf_trainer import HFTrainerBenchConfig
from analysis.bench.kurtosis import KurtosisBenchConfig
from analysis.bench.latency import BenchConfig
from analysis.bench.model_steps import ModelStepsConfig
from analysis.bench.runtimes import RuntimesConfig
from analysis.bench.sizes import SizesConfig
from analysis.bench.train_cost import TrainCostConfig
from analysis.cli import add_options, from_args, option, to_argv
from analysis.convergence.config import ConvergenceConfig
from analysis.decoder.demo import DemoConfig
from analysis.figures import AllFiguresConfig
from analysis.finetune import sweep
from analysis.finetune.config import SweepConfig
from analysis.finetune.figures import FiguresConfig
from analysis.finetune.gpu_bundle import BundleConfig
from analysis.finetune.hf_finetune import HFFinetuneConfig
from analysis.hessian.compare import CompareConfig


@dataclass(frozen=True)
class Example:
    folder: Path = option(Path("results"), "a folder")
    limit: int | None = option(None, "an optional count")
    scale: float = option(1.0, "a number")
    names: tuple = option(("a", "b"), "names")
    quiet: bool = option(False, "a switch")


def parse(cls, argv, items=None):
    ap = argparse.ArgumentParser()
    add_options(ap, cls, items=items)
    return from_args(cls, ap.parse_args(argv)), ap


def test_round_trip_keeps_types():
    cfg = Example(folder=Path("/tmp/x"), limit=3, scale=0.5, names=("c",), quiet=True)
    got, _ = parse(Example, to_argv(cfg))
    assert got == cfg and isinstance(got.folder, Path) and isinstance(got.limit, int)
    assert parse(Example, [])[0] == Example()


@pytest.mark.parametrize(
    "cls, items",
    [
        (SizesConfig, {"sparsity": float}),
        (KurtosisBenchConfig, None),
        (BatchingBenchConfig, None),
        (FiguresConfig, None),
        (DemoConfig, None),
        (BenchConfig, {"sparsity": float, "batch": int}),
        (RuntimesConfig, {"sparsity": float, "batch": int, "threads": int}),
        (TrainCostConfig, {"batches": int, "seqs": int}),
        (ModelStepsConfig, None),
        (HFTrainerBenchConfig, None),
        (HFFinetuneConfig, None),
        (BundleConfig, {"wheel": Path}),
        (CompareConfig, {"timing_sizes": int}),
        (ConvergenceConfig, None),
        (AllFiguresConfig, None),
        (SweepConfig, sweep.ITEMS),
    ],
)
def test_converted_commands_default_to_their_config(cls, items):
    got, ap = parse(cls, [], items)
    assert got == cls()
    assert all((a.help or "").strip() for a in ap._actions)
    first = next(f for f in cls.__dataclass_fields__.values() if f.type in ("int", "Path"))
    changed = replace(cls(), **{first.name: (7 if first.type == "int" else Path("/tmp/elsewhere"))})
    assert parse(cls, to_argv(changed), items)[0] == changed


@dataclass(frozen=True)
class Extended:
    names: tuple = option((), "positional names", positional=True, nargs="*", metavar="NAME")
    out_dir: Path | None = option(None, "a folder under another flag", flag="--out")
    only: tuple | None = option(None, "an optional list, possibly empty", nargs="*")
    bench: bool = option(True, "on unless --no-bench")
    extend: bool = option(False, "a switch that can be turned off too", action=argparse.BooleanOptionalAction)
    wheel: tuple = option((), "a repeatable flag", action="append", nargs=None)
    table: dict = dataclasses.field(default_factory=dict)  # no `option`: not on the command line


def test_positional_renamed_optional_and_negatable_fields():
    argv = ["a", "b", "--out", "/tmp/o", "--only", "--no-bench", "--extend", "--wheel", "x", "--wheel", "y"]
    cfg, ap = parse(Extended, argv)
    assert cfg == Extended(("a", "b"), Path("/tmp/o"), only=(), bench=False, extend=True, wheel=("x", "y"))
    assert "--table" not in ap.format_help() and parse(Extended, [])[0] == Extended()
    assert parse(Extended, ["--bench", "--no-extend"])[0] == Extended()
    assert parse(Extended, to_argv(cfg))[0] == cfg
    with pytest.raises(SystemExit):
        parse(Extended, ["--out-dir", "/tmp/o"])  # the field's name is not its flag


def test_two_configs_on_one_parser_and_skipped_fields():
    ap = argparse.ArgumentParser()
    add_options(ap, Example, skip=("names",))
    add_options(ap, Extended, skip=("names",))
    args = ap.parse_args(["--limit", "2", "--no-bench"])
    assert from_args(Example, args) == Example(limit=2) and from_args(Extended, args) == Extended(bench=False)
    with pytest.raises(SystemExit):
        ap.parse_args(["--names", "x"])
