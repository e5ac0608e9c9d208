"""What every results file records: the exact command, config, versions, seed, device, whether the code
was committed (tree_clean); atomic writes; loud warnings about records from a dirty tree."""

from __future__ import annotations

import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

import torch

from analysis.constants import ROOT, repo_path


def small_mode() -> bool:
    """True when GATECORE_SMALL=1: notebooks and CI run their smallest settings."""
    return os.environ.get("GATECORE_SMALL", "") == "1"


def command(module: str, args=()) -> str:
    """`python -m <module> <args>` quoted for a POSIX shell: the one way a command is written down."""
    return shlex.join(["python", "-m", module, *map(str, args)])


def command_line(argv=None) -> str:
    """The command that reproduces this run, as `python -m analysis.<module> ...`.

    A package run as `python -m analysis.finetune` is named so (not `analysis.finetune.__main__`), also in
    a spawned worker, where the main module has no spec and argv[0] is the package's __main__.py.
    """
    argv = sys.argv if argv is None else argv
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = spec.name if spec is not None and spec.name else _package_main(argv[0] if argv else "")
    if name:
        return command(name.removesuffix(".__main__"), argv[1:])
    return shlex.join(["python", *argv])


def _package_main(path: str) -> str | None:
    """`analysis.finetune` for ROOT/analysis/finetune/__main__.py; None for any other path."""
    p = Path(path).resolve()
    if p.name != "__main__.py" or not p.is_relative_to(ROOT):
        return None
    return ".".join(p.parent.relative_to(ROOT).parts)


CODE_NAMES = ("Makefile", "pyproject.toml", "pytest.ini", "environment.yml", "setup.py", "setup.cfg")


def is_code_file(path: str) -> bool:
    """Tracked files whose edits can change a result: Python sources and the build/dependency files.

    Results, figures and prose are not code: a run appending to results/ must not mark itself dirty.
    """
    name = path.rsplit("/", 1)[-1]
    return name.endswith(".py") or name in CODE_NAMES or (name.startswith("requirements") and name.endswith(".txt"))


def _unknown_tree() -> dict:
    return {"commit": None, "tree_clean": None, "dirty_files": None}


def git_state(root: Path = ROOT) -> dict:
    """{"commit", "tree_clean", "dirty_files"}: HEAD, and the tracked code files that differ from it.

    tree_clean is None (unknown) outside a git checkout, e.g. in a GPU bundle.
    """
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        diff = subprocess.run(
            ["git", "-C", str(root), "diff", "--name-only", "HEAD", "--"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return _unknown_tree()
    if head.returncode != 0:
        return _unknown_tree()
    if diff.returncode != 0:
        return {"commit": head.stdout.strip(), "tree_clean": None, "dirty_files": None}
    dirty = sorted(f for f in diff.stdout.splitlines() if is_code_file(f))
    return {"commit": head.stdout.strip(), "tree_clean": not dirty, "dirty_files": dirty}


def commit_id(state: dict) -> str | None:
    """HEAD, with "-dirty" appended when tracked code differs from it."""
    if state["commit"] is None:
        return None
    return state["commit"] + ("-dirty" if state["tree_clean"] is False else "")


def _git_commit() -> str | None:
    return commit_id(git_state())


def device_info(device: str | torch.device | None = None) -> dict:
    dev = torch.device(device) if device is not None else torch.device("cpu")
    info = {
        "device": str(dev),
        "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
    }
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def versions(git: dict | None = None) -> dict:
    import numpy
    import transformers

    commit = commit_id(git if git is not None else git_state())
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "gatecore_commit": commit,
    }


def provenance(config: dict, seed=None, device=None, argv=None) -> dict:
    """The header every results file starts with.

    tree_clean: False when tracked code (`is_code_file`) differs from the recorded commit, which
    then ends in "-dirty", and dirty_files lists those files; None outside a git checkout.
    """
    git = git_state()
    return {
        "command": command_line(argv),
        "config": config,
        "seed": seed,
        "versions": versions(git),
        "tree_clean": git["tree_clean"],
        "dirty_files": git["dirty_files"],
        **device_info(device),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "small_mode": small_mode(),
    }


# ---- dirty-tree warnings: when writing a record, and when a figure draws from one -----------------------

_WARNED_WRITES: set[str] = set()
DIRTY_SOURCES: dict[str, str] = {}  # results file -> what was found, for the summary of `make figures`
READ_SOURCES: set[str] = set()  # every results file a figure or table drew from (resolved paths): orphans are the rest


def is_dirty(record) -> bool:
    """True for a record written from a tree with uncommitted code changes (tree_clean false or a -dirty commit)."""
    if not isinstance(record, dict):
        return False
    v = record.get("versions")
    commit = v.get("gatecore_commit") if isinstance(v, dict) else None
    return record.get("tree_clean") is False or str(commit or "").endswith("-dirty")


def _warn_write(path: Path, obj) -> None:
    """One stderr warning per file and process when a record written there comes from a dirty tree."""
    if not isinstance(obj, dict) or obj.get("tree_clean") is not False or str(path) in _WARNED_WRITES:
        return
    _WARNED_WRITES.add(str(path))
    files = obj.get("dirty_files") or []
    shown = ", ".join(files[:6]) + (f", ... ({len(files)} in all)" if len(files) > 6 else "")
    print(
        f"warning: {repo_path(path)}: written from a working tree with uncommitted changes to tracked code "
        f"({shown}); the recorded commit {obj.get('versions', {}).get('gatecore_commit')} does not name "
        "the code that produced it. Commit, then rerun, for a reproducible result.",
        file=sys.stderr,
    )


def warn_if_dirty(path, records) -> bool:
    """Note `path` as drawn from (READ_SOURCES); warn (stderr, once per file) when it holds dirty-tree records,
    naming their run ids where they have them; True if so.

    `records`: the file's record, or a list of them. A warning, not an error: the figure is still drawn.
    """
    READ_SOURCES.add(str(Path(path).resolve()))
    records = records if isinstance(records, list) else [records]
    dirty = [r for r in records if is_dirty(r)]
    if not dirty:
        return False
    key = repo_path(path)
    if key not in DIRTY_SOURCES:
        ids = [str(r["run_id"]) for r in dirty if r.get("run_id") is not None]
        named = f" (run ids: {', '.join(ids[:5])}{', ...' if len(ids) > 5 else ''})" if ids else ""
        DIRTY_SOURCES[key] = f"{len(dirty)} of {len(records)} record(s){named}"
        print(
            f"warning: {key}: {DIRTY_SOURCES[key]} written with uncommitted code changes "
            "(-dirty commit id or tree_clean false): they may not match the recorded commit",
            file=sys.stderr,
        )
    return True


def _default(o):
    if hasattr(o, "as_dict"):
        return o.as_dict()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "item"):
        return o.item()
    raise TypeError(f"cannot write {type(o).__name__} to JSON")


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write JSON atomically (temp file + rename): a killed run never leaves half a file."""
    path = Path(path)
    _warn_write(path, obj)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_default) + "\n")
    os.replace(tmp, path)
    return path


def append_jsonl(path: str | os.PathLike, record: dict) -> Path:
    """Append one record as one line, flushed and fsynced; readers skip a torn line."""
    path = Path(path)
    _warn_write(path, record)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, default=_default) + "\n"
    with open(path, "a+b") as f:
        if f.tell() > 0:  # after a killed writer's torn line, start the record on a line of its own
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                line = "\n" + line
        f.write(line.encode())
        f.flush()
        os.fsync(f.fileno())
    return path


def replace_jsonl(path: str | os.PathLike, record: dict) -> Path:
    """Rewrite the file atomically with `record` in place of the line(s) of its run_id (appended if none)."""
    path = Path(path)
    _warn_write(path, record)
    rows = read_jsonl(path)
    at = [i for i, r in enumerate(rows) if r.get("run_id") == record["run_id"]]
    rows = [r for i, r in enumerate(rows) if i not in at[1:]]
    rows = rows[: at[0]] + [record] + rows[at[0] + 1 :] if at else rows + [record]
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text("".join(json.dumps(r, default=_default) + "\n" for r in rows))
    os.replace(tmp, path)
    return path


def read_record(path: str | os.PathLike) -> dict | None:
    """The record of a results JSON file, noted as drawn from and warned about when dirty (warn_if_dirty);
    None when there is no such file."""
    path = Path(path)
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    warn_if_dirty(path, record)
    return record


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Every complete record; a torn final line (a killed writer) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out
