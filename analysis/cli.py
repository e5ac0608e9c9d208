"""Frozen config dataclasses as command lines: each field carries its help; parser and argv come from the fields."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import fields
from pathlib import Path

SCALARS = {"int": int, "float": float, "Path": Path}  # by annotation (a string: `from __future__ import annotations`)


def option(default, help_: str, flag: str | None = None, positional: bool = False, **argparse_kw):
    """A config field with its CLI help. The flag is `--` + the name with dashes, or `flag`; `positional`: an
    argument without a flag. `argparse_kw` (nargs, metavar, required, action) override what the type gives."""
    return dataclasses.field(
        default=default, metadata={"help": help_, "flag": flag, "positional": positional, "argparse": argparse_kw}
    )


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def kind(annotation: str) -> str:
    """The annotation without `| None`, tuples as `tuple` (`tuple[str, ...] | None` -> tuple)."""
    bare = annotation.removesuffix(" | None")
    return "tuple" if bare.startswith("tuple") else bare


def scalar(annotation: str):
    """The argparse type of a field annotated `T` or `T | None` (int, float, Path; anything else: str)."""
    return SCALARS.get(kind(annotation), str)


def add_options(
    ap: argparse.ArgumentParser, cls, choices: dict | None = None, items: dict | None = None, skip=()
) -> None:
    """One flag per `option` field of `cls` but those named in `skip` (fields made otherwise are not on the
    command line): bool -> store_true (default True: --name / --no-name), tuple (or None) -> nargs='+' of
    `items[name]` (default str), int/float/Path/str (or None) -> one value; `choices[name]` restricts the values."""
    choices, items = choices or {}, items or {}
    for f in fields(cls):
        if "help" not in f.metadata or f.name in skip:
            continue
        kw = {"default": f.default, "help": f.metadata["help"] + " (default: %(default)s)"}
        if kind(f.type) == "bool":
            kw["action"] = argparse.BooleanOptionalAction if f.default else "store_true"
        elif kind(f.type) == "tuple":
            kw |= {"nargs": "+", "type": items.get(f.name, str)}
            kw["default"] = None if f.default is None else list(f.default)
        else:
            kw["type"] = scalar(f.type)
        if f.name in choices:
            kw["choices"] = choices[f.name]
        kw |= f.metadata.get("argparse", {})
        if f.metadata.get("positional"):
            ap.add_argument(f.name, **kw)
        else:
            ap.add_argument(f.metadata.get("flag") or flag(f.name), dest=f.name, **kw)


def from_args(cls, args: argparse.Namespace):
    """The config of parsed `add_options` flags (lists back to tuples); other names in `args` (another config's
    flags on the same parser) are left out, fields not in `args` keep their default."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items() if k in names})


def to_argv(cfg) -> list[str]:
    """The CLI arguments that give `cfg` (fields at their default, and fields not on the command line, are left
    out; positional values first)."""
    head, out = [], []
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if v == f.default or "help" not in f.metadata:
            continue
        name = f.metadata.get("flag") or flag(f.name)
        if isinstance(v, bool):
            out.append(name if v else "--no-" + name.removeprefix("--"))
        elif f.metadata["argparse"].get("action") == "append":
            out += [x for item in v for x in (name, str(item))]
        elif f.metadata.get("positional"):
            head += map(str, v) if isinstance(v, tuple) else [str(v)]
        else:
            out += [name, *map(str, v)] if isinstance(v, tuple) else [name, str(v)]
    return head + out
