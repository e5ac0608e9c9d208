"""What every results file records: the exact command, config, versions, seed, device; atomic writes."""
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

ROOT = Path(__file__).resolve().parent.parent


def small_mode() -> bool:
    """True when GATECORE_SMALL=1: notebooks and CI run their smallest settings."""
    return os.environ.get("GATECORE_SMALL", "") == "1"


def command_line(argv=None) -> str:
    """The command that reproduces this run, as `python -m analysis.<module> ...`."""
    argv = sys.argv if argv is None else argv
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    head = ["python", "-m", spec.name] if spec is not None and spec.name else ["python", *argv[:1]]
    return shlex.join(head + list(argv[1:]))


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5)
        return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired):
        return None


def device_info(device: str | torch.device | None = None) -> dict:
    dev = torch.device(device) if device is not None else torch.device("cpu")
    info = {"device": str(dev), "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count()}
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info


def versions() -> dict:
    import numpy
    import transformers
    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "numpy": numpy.__version__, "gatecore_commit": _git_commit()}


def provenance(config: dict, seed=None, device=None, argv=None) -> dict:
    """The header every results file starts with."""
    return {"command": command_line(argv), "config": config, "seed": seed, "versions": versions(),
            **device_info(device), "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "small_mode": small_mode()}


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
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=_default) + "\n")
    os.replace(tmp, path)
    return path


def append_jsonl(path: str | os.PathLike, record: dict) -> Path:
    """Append one record as one line, flushed and fsynced; readers skip a torn line."""
    path = Path(path)
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
