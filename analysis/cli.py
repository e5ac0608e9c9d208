"""Frozen config dataclasses as command lines: each field carries its help; parser and argv come from the fields."""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import fields
from pathlib import Path

SCALARS = {"int": int, "float": float, "Path": Path}  # by annotation (a string: `from __future__ import annotations`)


def option(default, help_: str):
    """A config field with its CLI help (the flag is `--` + the name with dashes)."""
    return dataclasses.field(default=default, metadata={"help": help_})


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def scalar(annotation: str):
    """The argparse type of a field annotated `T` or `T | None` (int, float, Path; anything else: str)."""
    return SCALARS.get(annotation.removesuffix(" | None"), str)


def add_options(ap: argparse.ArgumentParser, cls, choices: dict | None = None, items: dict | None = None) -> None:
    """One flag per field of `cls`: bool -> store_true, tuple -> nargs='+' of `items[name]` (default str),
    int/float/Path/str (or None) -> one value; `choices[name]` restricts the values."""
    choices, items = choices or {}, items or {}
    for f in fields(cls):
        name, help_ = flag(f.name), f.metadata["help"] + " (default: %(default)s)"
        if f.type == "bool":
            ap.add_argument(name, action="store_true", help=help_)
        elif f.type == "tuple":
            ap.add_argument(
                name,
                nargs="+",
                type=items.get(f.name, str),
                default=list(f.default),
                choices=choices.get(f.name),
                help=help_,
            )
        else:
            ap.add_argument(name, type=scalar(f.type), default=f.default, choices=choices.get(f.name), help=help_)


def from_args(cls, args: argparse.Namespace):
    """The config of parsed `add_options` flags (lists back to tuples)."""
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in vars(args).items()})


def to_argv(cfg) -> list[str]:
    """The CLI arguments that give `cfg` (fields at their default are left out)."""
    out = []
    for f in fields(cfg):
        v = getattr(cfg, f.name)
        if v == f.default:
            continue
        if isinstance(v, bool):
            out.append(flag(f.name))
        elif isinstance(v, tuple):
            out += [flag(f.name), *map(str, v)]
        else:
            out += [flag(f.name), str(v)]
    return out
