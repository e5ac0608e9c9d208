"""Bad input at the command line: one table of wrong invocations of `python -m analysis.finetune`.

Every row must end, before any run starts, in exit status 2 and one line `error: <message>` on stderr
naming the file/line/column or option and what is allowed, with no traceback, nothing on stdout, and
nothing written: the results file byte for byte as it was, no errors file, no checkpoint, no new file at
all. Rows run `main(argv)` in-process (fast); two run the real command line in a subprocess. How long a
refusal takes is measured, not asserted here (these machines are shared and noisy; the interpreter's start,
mostly `import torch`, is most of it).
"""

import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from analysis.bench.refusals import ROWS, WHY, argv_of, make_place
from analysis.data import DataError
from analysis.finetune import sweep
from analysis.finetune.config import SweepConfig, resolve
from analysis.finetune.validate import ConfigError, validate
from analysis.provenance import ROOT


@pytest.fixture
def place(tmp_path):
    """The table's folders, a results file holding one earlier record; returns {name: path}."""
    return make_place(tmp_path)


def files(root: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def check_refused(rc, out: str, err: str, message: str, before: dict, root: Path) -> None:
    assert rc == 2, (rc, out, err)
    assert "Traceback" not in out + err and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert re.search(message, lines[0]), lines[0]
    assert files(root) == before  # the results file untouched, no errors file, no checkpoint, nothing new


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_refused_in_one_line_and_writes_nothing(row, place, capsys):
    _, changes, extra, message = row
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    before = files(place["tmp"])
    rc = sweep.main(argv_of(place, changes, extra))
    got = capsys.readouterr()
    check_refused(rc, got.out, got.err, message, before, place["tmp"])


def test_table_covers_at_least_twenty_rows():
    assert len(ROWS) >= 20 and len({r[0] for r in ROWS}) == len(ROWS)
    # the benchmark times the first WHY rows as the cases: they must be those, first to last
    assert (ROWS[0][0], ROWS[WHY - 1][0]) == ("missing label column", "zero batch size")


@pytest.mark.parametrize("row", [ROWS[8], ROWS[7]], ids=["keep above 1", "bytes that are not UTF-8"])
def test_the_real_command_line(row, place):
    """`python -m analysis.finetune` itself: exit status 2, one line on stderr, nothing written."""
    _, changes, extra, message = row
    before = files(place["tmp"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.finetune", *argv_of(place, changes, extra)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # a guard against a hang, not a speed test
    check_refused(proc.returncode, proc.stdout, proc.stderr, message, before, place["tmp"])


def test_debug_shows_the_traceback(place):
    with pytest.raises(ConfigError, match="--keep must be"):
        sweep.main(argv_of(place, {"--keep": ["1.5"]}, ["--debug"]))


def test_python_callers_get_the_same_checks(place):
    """A config built in Python is checked when built (options) and when run (the data), before anything is written."""
    with pytest.raises(ConfigError, match=r"--keep must be a kept fraction in \(0, 1\], got 1\.5"):
        SweepConfig(keep=(1.5,))
    with pytest.raises(ConfigError, match="--tasks takes a list of values, got 'SST-2'"):
        SweepConfig(tasks="SST-2")  # a str is not a list of task names
    with pytest.raises(ConfigError, match="gate methods need at least one keep target"):
        SweepConfig(methods=("gates",), keep=())
    before = files(place["tmp"])
    cfg = SweepConfig(
        model="tiny-bert",
        tasks=("csv",),
        data=str(place["latin1"]),
        text_cols=("text",),
        label_col="label",
        methods=("gates",),
        max_len=16,
        out=place["out"],
        checkpoint_dir=str(place["tmp"] / "checkpoints"),
        quiet=True,
    )
    with pytest.raises(DataError, match=r"latin1/train\.csv, line 4, column 4"):
        sweep.run_sweep(cfg)
    assert files(place["tmp"]) == before
    validate(resolve(replace(cfg, encoding="latin-1")))  # the same file with its encoding stated is accepted


@pytest.mark.parametrize("task", ["RTE", "csv", "rotten_tomatoes"])
def test_dry_run_works_for_every_task_kind(task, place, capsys):
    before = files(place["tmp"])
    rc = sweep.main(argv_of(place, {"--tasks": [task]}, ["--dry-run"]))
    got = capsys.readouterr()
    assert rc == 0 and "plan: 1 runs to do" in got.out and "Traceback" not in got.out + got.err
    assert files(place["tmp"]) == before
