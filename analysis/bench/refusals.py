"""How long the command line takes to refuse bad input: the cases of issue 28's "Why", timed at the real command line.

    python -m analysis.bench.refusals [--repeats 3]

Each case runs `python -m analysis.finetune <bad argv>` in a fresh interpreter, interleaved round by round
with a baseline in the same process, `python -m analysis.finetune --help` (the interpreter's start and the
imports, mostly torch, which every refusal pays). Reports per case the median and worst wall time, the ratio
to the baseline's median, and checks each ended in exit status 2 and one `error:` line. The first round is
also reported apart: it may pay a cold file cache. Writes results/bench/cli_refusals.json.

The table of bad inputs (folders and argv) lives here; tests/test_cli_bad_input.py checks every row's message.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from analysis.cli import add_options, from_args, option
from analysis.constants import study_results
from analysis.provenance import ROOT, provenance, write_json

REPEATS = 3
WHY = 14  # the first rows of ROWS are the cases of issue 28's "Why", in its order

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
    ("unknown autocast dtype", {}, ["--autocast", "float64"], r"argument --autocast: invalid choice: 'float64'"),
    ("unknown protocol", {}, ["--protocol", "tpu"], r"argument --protocol: invalid choice: 'tpu' \(choose from"),
    (
        "choices for, without a source",
        {},
        ["--choices-for", "gates"],
        r"--choices-for: names the methods that take --choices-from's lrs; give --choices-from",
    ),
    (
        "choices for a method not run",
        {},
        ["--choices-from", "{out}", "--choices-for", "lora"],
        r"--choices-for: 'lora' is not one of gates",
    ),
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


def argv_of(place, changes=None, extra=()) -> list[str]:
    """A good command line for the tiny model and the `good` folder, with `changes` and `extra` applied."""
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


def make_place(root: Path) -> dict:
    """The folders of FOLDERS under `root` and a results file holding one earlier record; {name: path}."""
    for name, files in FOLDERS.items():
        for f, text in files.items():
            write(root / name / f, text)
    out = root / "results" / "runs.jsonl"
    write(out, RECORD)
    return {"tmp": root, "out": out, **{name: root / name for name in FOLDERS}}


@dataclass(frozen=True)
class RefusalBenchConfig:
    repeats: int = option(REPEATS, "interleaved rounds")
    out: str = option(str(study_results("bench") / "cli_refusals.json"), "results file")


def timed(args: list[str]) -> tuple[float, int, str]:
    """(wall seconds, exit status, stderr) of `python -m analysis.finetune *args` from the repository root."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "analysis.finetune", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return time.perf_counter() - t, proc.returncode, proc.stderr


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(ap, RefusalBenchConfig)
    cfg = from_args(RefusalBenchConfig, ap.parse_args(argv))
    if cfg.repeats < 1:
        ap.error(f"--repeats must be at least 1, got {cfg.repeats}")
    cases = {"baseline: --help": ["--help"]}
    with tempfile.TemporaryDirectory() as tmp:
        place = make_place(Path(tmp))
        cases |= {name: argv_of(place, changes, extra) for name, changes, extra, _ in ROWS[:WHY]}
        times = {name: [] for name in cases}
        lines = {}
        for r in range(cfg.repeats):
            for name, args in cases.items():
                s, rc, err = timed(args)
                times[name].append(s)
                if name.startswith("baseline"):
                    ok = rc == 0
                else:
                    ok = rc == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error: ")
                    lines[name] = err.strip()
                if not ok:
                    print(f"error: case {name!r} did not end as expected (exit {rc}): {err.strip()[-300:]}")
                    return 1
            print(f"round {r + 1}/{cfg.repeats}: " + ", ".join(f"{t[-1]:.1f}" for t in times.values()) + " s")
    base = statistics.median(times["baseline: --help"])
    rows = {
        name: {
            "median_s": statistics.median(t),
            "max_s": max(t),
            "first_s": t[0],
            "all_s": t,
            "ratio_to_baseline": statistics.median(t) / base,
            "message": lines.get(name),
        }
        for name, t in times.items()
    }
    worst = max(r["max_s"] for name, r in rows.items() if not name.startswith("baseline"))
    write_json(cfg.out, {**provenance({"repeats": cfg.repeats}, seed=0), "cases": rows, "worst_refusal_s": worst})
    print(f"\n{'case':36s} {'median s':>9s} {'max s':>7s} {'x --help':>9s}")
    for name, r in rows.items():
        print(f"{name:36s} {r['median_s']:9.2f} {r['max_s']:7.2f} {r['ratio_to_baseline']:9.2f}")
    print(f"worst refusal: {worst:.2f} s; wrote {cfg.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
