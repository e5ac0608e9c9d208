"""The generated parts of a markdown document (docs/results.md), rewritten by `make figures` from results/ alone.

A part is a block of lines between two marker lines, each alone on its line:

    <!-- generated: NAME -->
    ... (rewritten: do not edit by hand)
    <!-- end generated -->

`fill(text, blocks)` puts blocks[NAME] between the markers of NAME and leaves every other line as it was; a
marker whose NAME has no block keeps its old body and is reported, so a study whose results are missing leaves
its table as it was rather than emptying it (docs/design.md §5). `table` and `source` write a part the same
way everywhere: a markdown table, then the results file and the command recorded in it.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
from pathlib import Path

from analysis.constants import repo_path

START = re.compile(r"^<!-- generated: ([\w.-]+) -->$")
END = "<!-- end generated -->"


def fill(text: str, blocks: dict[str, str]) -> tuple[str, list[str]]:
    """(text with each marked part's body replaced by blocks[NAME], the NAMEs found without a block).

    Raises ValueError for a start marker without its end, an end without a start, or a nested start.
    """
    out, kept, name = [], [], None
    for number, line in enumerate(text.split("\n"), 1):
        start = START.match(line)
        if name is None:
            if line == END:
                raise ValueError(f"line {number}: {END!r} without a '<!-- generated: NAME -->' before it")
            out.append(line)
            if start:
                name, old = start.group(1), []
            continue
        if start:
            raise ValueError(f"line {number}: generated part {start.group(1)!r} starts inside part {name!r}")
        if line != END:
            old.append(line)
            continue
        if name in blocks:
            out += blocks[name].rstrip("\n").split("\n")
        else:
            out += old
            kept.append(name)
        out.append(END)
        name = None
    if name is not None:
        raise ValueError(f"generated part {name!r} has no {END!r} line")
    return "\n".join(out), kept


def update(path: str | Path, blocks: dict[str, str]) -> tuple[bool, list[str]]:
    """Rewrite `path`'s generated parts (only when something changed): (changed, NAMEs left as they were)."""
    path = Path(path)
    text = path.read_text()
    new, kept = fill(text, blocks)
    if new != text:
        path.write_text(new)
    return new != text, kept


def table(header, rows) -> str:
    """A markdown table: the header cells, then one line per row of cells."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(map(str, r)) + " |" for r in rows])


def source(path, record: dict, module: str) -> str:
    """The line under a generated table: the results file, the command recorded in it (as recorded) and its commit
    and date; where the recorded module no longer exists, the name it has now (`module`, the file's writer)."""
    cmd = str(record.get("command"))
    words = shlex.split(cmd)
    moved = ""
    if words[:2] == ["python", "-m"] and len(words) > 2 and words[2] != module and not _exists(words[2]):
        moved = f" (`{words[2]}` is now `{module}`)"
    commit = str((record.get("versions") or {}).get("gatecore_commit"))[:10]
    return f"From `{repo_path(path)}`: `{cmd}`{moved}, commit {commit}, {str(record.get('date'))[:10]}."


def _exists(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a parent package that is gone too
        return False
