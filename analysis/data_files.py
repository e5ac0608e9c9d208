"""Reading a task's data files, checked as they are read (analysis/data.py builds the tasks from them).

    read_folder(DIR, ["review"], "stars")          # train.{csv,tsv} + dev|validation|test.{csv,tsv}
    read_hf("hf:glue:sst2", ["sentence"], "label")  # through Hugging Face `datasets`

Every problem is a `DataError` naming the file and line (and, for bytes that do not decode, the column):
a missing folder, file or column, a ragged row, undecodable bytes, a split without examples, a single
class in train, a non-numeric regression label, a dev label that train never has.
"""

from __future__ import annotations

import codecs
import csv
import math
from dataclasses import dataclass, field
from pathlib import Path


class DataError(ValueError):
    """A data file is missing or does not look as expected; the message names the file and line."""


@dataclass
class Split:
    texts: list[tuple[str, ...]] = field(default_factory=list)  # one or two segments per example
    labels: list = field(default_factory=list)  # int class ids, or float scores

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, idx) -> Split:
        return Split([self.texts[i] for i in idx], [self.labels[i] for i in idx])


def open_text(path: Path, what: str, encoding: str = "utf-8"):
    """`path` opened for reading as text (UTF-8 through a leading BOM); `what` says which file was expected."""
    if not path.is_file():
        raise DataError(f"{what}: file {path} not found")
    try:
        return open(path, encoding="utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding, newline="")
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r} for {path}; e.g. utf-8, latin-1, cp1252") from None
    except OSError as e:
        raise DataError(f"{path}: cannot be read ({e.strerror})") from None


def undecodable(path: Path, encoding: str) -> DataError:
    """The error for a file that does not decode: its first such line, and the byte column there."""
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                raw.decode(encoding)
            except UnicodeDecodeError as e:
                return DataError(
                    f"{path}, line {line_no}, column {e.start + 1}: bytes {raw[e.start : e.end]!r} are not "
                    f"{encoding}; save the file as UTF-8 or state its encoding (e.g. --encoding latin-1)"
                )
    return DataError(f"{path}: not readable as {encoding}; save it as UTF-8 or state its encoding")


def find_file(data_dir: Path, stems) -> Path | None:
    for stem in stems:
        for ext in (".tsv", ".csv"):
            if (data_dir / (stem + ext)).is_file():
                return data_dir / (stem + ext)
    return None


def read_table(path: Path, text_cols, label_col: str, encoding: str = "utf-8") -> tuple[list, list[str], list[int]]:
    """(texts, raw labels, their line numbers) from a CSV (standard quoting) or TSV (no quoting, as GLUE) with a
    header row and at least one example."""
    with open_text(path, "table", encoding) as f:
        tsv = path.suffix == ".tsv"
        try:
            rows = list(
                csv.reader(f, delimiter="\t" if tsv else ",", quoting=csv.QUOTE_NONE if tsv else csv.QUOTE_MINIMAL)
            )
        except UnicodeDecodeError:
            raise undecodable(path, encoding) from None
        except csv.Error as e:  # e.g. a NUL byte: not a text table
            raise DataError(f"{path}: not a readable {'TSV' if tsv else 'CSV'} file ({e})") from None
        reader = iter(rows)
        head = next(reader, None)
        missing = [c for c in [*text_cols, label_col] if head is None or c not in head]
        if missing:
            raise DataError(f"{path}, line 1: expected a header with columns {missing}, got {head}")
        idx = [head.index(c) for c in text_cols]
        li = head.index(label_col)
        texts, labels, lines = [], [], []
        for line_no, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) != len(head):
                raise DataError(
                    f"{path}, line {line_no}: expected {len(head)} columns as in the header, got {len(row)}"
                )
            texts.append(tuple(row[i].strip() for i in idx))
            labels.append(row[li].strip())
            lines.append(line_no)
    if not labels:
        raise DataError(f"{path}: no examples after the header line; every split needs at least one")
    return texts, labels, lines


def encode_labels(raw_splits: dict, regression: bool):
    """String labels -> class ids (sorted names of train) or floats; returns (splits, names).

    raw_splits: {"train"|"dev": (source, texts, labels, line numbers or None for row numbers)}.
    """

    def where(source, lines, i):
        return f"{source}, line {lines[i]}" if lines else f"{source}, row {i + 1}"

    for k, (source, _, raw, _) in raw_splits.items():
        if not raw:
            raise DataError(f"{source}: the {k} split has no examples; every split needs at least one")
    out = {}
    if regression:
        for k, (source, texts, raw, lines) in raw_splits.items():
            values = []
            for i, x in enumerate(raw):
                try:
                    values.append(float(x))
                except ValueError:
                    values.append(math.nan)
                if not math.isfinite(values[-1]):
                    raise DataError(
                        f"{where(source, lines, i)}: expected a numeric {k} label for regression, got {x!r}"
                    )
            out[k] = Split(texts, values)
        return out, None
    names = tuple(sorted({str(x) for x in raw_splits["train"][2]}))
    if len(names) < 2:
        raise DataError(
            f"{raw_splits['train'][0]}: every train label is {names[0]!r}; classification needs at least "
            "two classes (numeric scores: --regression)"
        )
    for k, (source, texts, raw, lines) in raw_splits.items():
        bad = next((i for i, x in enumerate(raw) if str(x) not in names), None)
        if bad is not None:
            raise DataError(
                f"{where(source, lines, bad)}: {k} label {raw[bad]!r} does not occur in train (labels: {list(names)})"
            )
        out[k] = Split(texts, [names.index(str(x)) for x in raw])
    return out, names


def check_columns(text_cols, label_col) -> None:
    if not text_cols or not label_col:
        raise DataError("a CSV/TSV folder or hf: dataset needs --text-cols (one or two column names) and --label-col")
    if isinstance(text_cols, str) or len(text_cols) > 2:
        raise DataError(f"--text-cols takes one or two column names (a text, or a pair), got {text_cols!r}")


def read_folder(data_dir, text_cols, label_col: str, regression: bool = False, encoding: str = "utf-8"):
    """train.{csv,tsv} and dev/validation/test.{csv,tsv} from a user folder."""
    data_dir = Path(data_dir)
    check_columns(text_cols, label_col)
    if not data_dir.is_dir():
        raise DataError(f"--data {data_dir}: {'is a file, not a folder' if data_dir.exists() else 'folder not found'}")
    train = find_file(data_dir, ["train"])
    dev = find_file(data_dir, ["dev", "validation", "test"])
    if train is None or dev is None:
        raise DataError(
            f"{data_dir}: expected train.csv|tsv and dev|validation|test.csv|tsv, found "
            f"{sorted(p.name for p in data_dir.glob('*'))[:20]}"
        )
    return encode_labels(
        {
            k: (str(path), *read_table(path, text_cols, label_col, encoding))
            for k, path in (("train", train), ("dev", dev))
        },
        regression,
    )


def read_hf(spec: str, text_cols, label_col: str, regression: bool = False):
    """`hf:PATH[:CONFIG]` through Hugging Face `datasets` (imported only here; it needs a network or a local dir)."""
    check_columns(text_cols, label_col)
    try:
        import datasets
    except ImportError:
        raise DataError(
            "hf: tasks need the Hugging Face `datasets` package (pip install datasets); "
            "offline, use a GLUE folder, rotten_tomatoes or --data DIR"
        ) from None
    path, _, config = spec[len("hf:") :].partition(":")
    try:
        ds = datasets.load_dataset(path, config or None)
    except Exception as e:  # not found, offline, a bad config name: whatever `datasets` raises, in one line
        raise DataError(
            f"{spec}: datasets.load_dataset({path!r}, {config or None!r}) failed: {type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}"
        ) from None
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
        raw[k] = (f"{spec} split {key}", texts, [str(x) for x in ds[key][label_col]], None)
    return encode_labels(raw, regression)
