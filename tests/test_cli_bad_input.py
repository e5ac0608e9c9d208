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

from analysis.data import DataError
from analysis.finetune import sweep
from analysis.finetune.config import SweepConfig, resolve
from analysis.finetune.validate import ConfigError, validate
from analysis.provenance import ROOT

RECORD = '{"run_id": "000000000000", "note": "a record from an earlier run"}\n'


def write(path: Path, text, encoding="utf-8") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode(encoding))


GOOD = "text,label\ngood film,pos\nbad film,neg\nfine plot,pos\ndull plot,neg\n"
FOLDERS = {  # name -> {file: content}; "good" is what every row starts from
    "good": {"train.csv": GOOD, "dev.csv": GOOD},
    "ragged": {"train.csv": "text,label\ngood,pos\nbad,neg,extra\n", "dev.csv": GOOD},
    "header_only": {"train.csv": "text,label\n", "dev.csv": GOOD},
    "empty_dev": {"train.csv": GOOD, "dev.csv": "text,label\n"},
    "single_class": {"train.csv": "text,label\ngood,pos\nfine,pos\nok,pos\n", "dev.csv": "text,label\nbad,pos\n"},
    "latin1": {"train.csv": b"text,label\ngood,pos\nbad,neg\ncaf\xe9 ok,pos\n", "dev.csv": GOOD},
    "unseen_dev": {"train.csv": GOOD, "dev.csv": "text,label\ngood,pos\nso so,meh\n"},
    "regression": {"train.csv": "text,label\ngood,4.5\nbad,high\n", "dev.csv": "text,label\nok,3\n"},
    "one_row": {"train.csv": "text,label\ngood,4.5\n", "dev.csv": "text,label\nok,3\n"},
    "no_dev": {"train.csv": GOOD},
}

# (row id, argv changes: {option: values, None = drop the option}, extra args, message regex)
ROWS = [
    # the cases of issue 28's "Why", in its order
    (
        "missing label column",
        {"--label-col": ["stars"]},
        [],
        r"good/train\.csv, line 1: expected a header with columns \['stars'\], got \['text', 'label'\]",
    ),
    (
        "ragged row",
        {"--data": ["{ragged}"]},
        [],
        r"ragged/train\.csv, line 3: expected 2 columns as in the header, got 3",
    ),
    ("missing folder", {"--data": ["{tmp}/nope"]}, [], r"--data .*nope: folder not found"),
    ("csv without --data", {"--data": None}, [], r"--data: task csv needs a folder of train/dev CSV/TSV files"),
    (
        "unknown GLUE name",
        {"--tasks": ["SST3"]},
        [],
        r"--tasks: unknown task 'SST3'; expected a GLUE name \(SST-2, MRPC",
    ),
    (
        "train with a header and no rows",
        {"--data": ["{header_only}"]},
        [],
        r"header_only/train\.csv: no examples after the header line",
    ),
    (
        "a single class in train",
        {"--data": ["{single_class}"]},
        [],
        r"single_class/train\.csv: every train label is 'pos'; classification needs at least two classes",
    ),
    (
        "bytes that are not UTF-8",
        {"--data": ["{latin1}"]},
        [],
        r"latin1/train\.csv, line 4, column 4: bytes b'\\xe9' are not utf-8; .*--encoding latin-1",
    ),
    ("keep above 1", {"--keep": ["1.5"]}, [], r"--keep must be a kept fraction in \(0, 1\], got 1\.5"),
    ("keep below 0", {"--keep": ["-0.2"]}, [], r"--keep must be a kept fraction in \(0, 1\], got -0\.2"),
    (
        "missing model folder",
        {"--model": ["./folder/"]},
        [],
        r"--model \./folder/: model folder '\./folder/' does not exist",
    ),
    ("zero epochs", {"--epochs": ["0"]}, [], r"--epochs must be an integer in \[1, inf\), got 0"),
    ("zero workers", {"--workers": ["0"]}, [], r"--workers must be an integer in \[1, inf\), got 0"),
    ("zero batch size", {"--batch-size": ["0"]}, [], r"--batch-size must be an integer in \[1, inf\), got 0"),
    # more of the same kinds: data, numbers, names, paths, the model
    ("empty dev split", {"--data": ["{empty_dev}"]}, [], r"empty_dev/dev\.csv: no examples after the header line"),
    (
        "dev label unseen in train",
        {"--data": ["{unseen_dev}"]},
        [],
        r"unseen_dev/dev\.csv, line 3: dev label 'meh' does not occur in train \(labels: \['neg', 'pos'\]\)",
    ),
    (
        "non-numeric regression label",
        {"--data": ["{regression}"]},
        ["--regression"],
        r"regression/train\.csv, line 3: expected a numeric train label for regression, got 'high'",
    ),
    (
        "train too small to carve val",
        {"--data": ["{one_row}"]},
        ["--regression"],
        r"one_row: train has 1 example; val is carved from it, so it needs at least 2",
    ),
    ("no dev file", {"--data": ["{no_dev}"]}, [], r"no_dev: expected train\.csv\|tsv and dev\|validation\|test"),
    ("unknown encoding", {}, ["--encoding", "klingon"], r"--encoding: unknown encoding 'klingon'"),
    ("text columns missing", {"--text-cols": None}, [], r"--text-cols and --label-col: task csv needs"),
    (
        "three text columns",
        {"--text-cols": ["text", "label", "text"]},
        [],
        r"--text-cols takes one or two column names",
    ),
    ("not an integer", {"--epochs": ["abc"]}, [], r"argument --epochs: invalid int value: 'abc'"),
    (
        "unknown method",
        {"--methods": ["gatez"]},
        [],
        r"argument --methods: invalid choice: 'gatez' \(choose from .*full.*gates\+lora",
    ),
    ("unknown option", {}, ["--kep", "0.5"], r"unrecognized arguments: --kep 0\.5"),
    ("unknown protocol", {}, ["--protocol", "tpu"], r"argument --protocol: invalid choice: 'tpu' \(choose from"),
    ("negative lr", {}, ["--lr", "-0.001"], r"--lr must be a positive finite number in \(0, inf\), got -0\.001"),
    ("zero gate lr", {}, ["--gate-lr", "0"], r"--gate-lr must be a positive finite number in \(0, inf\), got 0\.0"),
    ("nan lam", {}, ["--lam", "nan"], r"--lam must be a finite number in \[0, inf\), got nan"),
    ("zero sigma", {}, ["--sigma", "0"], r"--sigma must be a positive finite number in \(0, inf\), got 0\.0"),
    ("lam warm-up above 1", {}, ["--lam-warmup", "1.5"], r"--lam-warmup must be a fraction of the steps in \[0, 1\]"),
    ("zero threads", {}, ["--threads", "0"], r"--threads must be an integer in \[1, inf\), got 0"),
    ("a seed twice", {}, ["--seeds", "0", "0"], r"--seeds lists a value twice: \[0, 0\]"),
    ("negative curve points", {}, ["--curve-points", "-1"], r"--curve-points must be an integer in \[0, inf\), got -1"),
    (
        "kurtosis tau without the target objective",
        {},
        ["--kurtosis-tau", "100", "--objective", "params"],
        r"--kurtosis-tau weights the paper's `target` objective only; set --objective target",
    ),
    ("QNLI has no train split", {"--tasks": ["QNLI"]}, [], r"--tasks: QNLI has no train\.tsv in GLUE \(only dev\)"),
    ("missing GLUE folder", {"--tasks": ["RTE"]}, ["--glue-dir", "{tmp}/glue"], r"--glue-dir .*glue: folder not found"),
    ("results path is a folder", {"--out": ["{tmp}"]}, [], r"--out .*: is a folder; expected a results file"),
    ("checkpoint folder is a file", {"--checkpoint-dir": ["{out}"]}, [], r"--checkpoint-dir .*runs\.jsonl: is a file"),
    (
        "unknown tiny model",
        {"--model": ["tiny-gpt"]},
        [],
        r"--model tiny-gpt: expected one of tiny-bert, tiny-roberta, tiny-llama",
    ),
    (
        "max-len beyond the model's positions",
        {"--max-len": ["128"]},
        [],
        r"--max-len 128: the model has 64 positions; use --max-len 4\.\.64",
    ),
    (
        "LoRA rank beyond the matrix",
        {"--methods": ["lora"]},
        ["--lora-r", "100"],
        r"--methods lora on --model tiny-bert: LoRA rank r .* must be a positive integer in \[1, 16\], got 100",
    ),
    ("no GPU here", {}, ["--device", "cuda"], r"--device cuda: this machine has 0 CUDA device\(s\)"),
    ("not a device", {}, ["--device", "gpu0"], r"--device: 'gpu0' is not a torch device"),
    ("missing root folder", {}, ["--root", "{tmp}/nowhere"], r"--root .*nowhere: folder not found"),
]


@pytest.fixture
def place(tmp_path):
    """The folders above, a results file holding one earlier record; returns {name: path}."""
    for name, files in FOLDERS.items():
        for f, text in files.items():
            write(tmp_path / name / f, text)
    out = tmp_path / "results" / "runs.jsonl"
    write(out, RECORD)
    return {"tmp": tmp_path, "out": out, **{name: tmp_path / name for name in FOLDERS}}


def argv(place, changes=None, extra=()) -> list[str]:
    opts = {
        "--model": ["tiny-bert"],
        "--tasks": ["csv"],
        "--data": ["{good}"],
        "--text-cols": ["text"],
        "--label-col": ["label"],
        "--methods": ["gates"],
        "--keep": ["0.7"],
        "--max-len": ["16"],
        "--epochs": ["1"],
        "--batch-size": ["2"],
        "--out": ["{out}"],
        "--checkpoint-dir": ["{tmp}/checkpoints"],
    }
    opts.update(changes or {})
    args = [a for k, v in opts.items() if v is not None for a in (k, *v)] + list(extra) + ["--quiet", "--no-bench"]
    return [a.format(**place) for a in args]


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
    rc = sweep.main(argv(place, changes, extra))
    got = capsys.readouterr()
    check_refused(rc, got.out, got.err, message, before, place["tmp"])


def test_table_covers_at_least_twenty_rows():
    assert len(ROWS) >= 20 and len({r[0] for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize("row", [ROWS[8], ROWS[7]], ids=["keep above 1", "bytes that are not UTF-8"])
def test_the_real_command_line(row, place):
    """`python -m analysis.finetune` itself: exit status 2, one line on stderr, nothing written."""
    _, changes, extra, message = row
    before = files(place["tmp"])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.finetune", *argv(place, changes, extra)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # a guard against a hang, not a speed test
    check_refused(proc.returncode, proc.stdout, proc.stderr, message, before, place["tmp"])


def test_debug_shows_the_traceback(place):
    with pytest.raises(ConfigError, match="--keep must be"):
        sweep.main(argv(place, {"--keep": ["1.5"]}, ["--debug"]))


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
    rc = sweep.main(argv(place, {"--tasks": [task]}, ["--dry-run"]))
    got = capsys.readouterr()
    assert rc == 0 and "plan: 1 runs to do" in got.out and "Traceback" not in got.out + got.err
    assert files(place["tmp"]) == before
