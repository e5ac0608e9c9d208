"""Execute the notebooks, the one shared way (docs/design.md §5).

    python -m analysis.notebooks                       # every notebook, default settings: the committed outputs
    python -m analysis.notebooks 01_gate_convergence   # one notebook
    python -m analysis.notebooks --small               # small mode (GATECORE_SMALL=1, as CI runs them); writes nothing

Each notebook is a pair (notebooks/jupytext.toml): NAME.py, its source in jupytext's percent format
(what linters, tests and reviews read), and NAME.ipynb, the same cells with their outputs (what Jupyter Lab
opens). A run reads NAME.py, executes it on the project's kernel "gatecore" (`make setup`) from the
notebooks/ folder, as Jupyter does, and in default mode writes NAME.ipynb with the new outputs. Small mode
only checks that the notebook runs: its outputs would replace the committed ones, so they are not written.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

from analysis.cli import add_options, from_args, option
from analysis.constants import ROOT, repo_path

NOTEBOOKS_DIR = ROOT / "notebooks"
KERNEL = "gatecore"
TIMEOUT_S = 1800  # per cell


def names() -> list[str]:
    """The notebooks: every notebooks/NAME.py that has its NAME.ipynb."""
    return sorted(p.stem for p in NOTEBOOKS_DIR.glob("*.py") if p.with_suffix(".ipynb").is_file())


def read_source(name: str):
    """NAME.py as a notebook (no outputs), with the kernel the project runs it on."""
    import jupytext

    nb = jupytext.read(NOTEBOOKS_DIR / f"{name}.py")
    nb.metadata["kernelspec"] = {"name": KERNEL, "display_name": "gatecore (.venv)", "language": "python"}
    return nb


def execute(name: str, small: bool, timeout: int = TIMEOUT_S):
    """Run NAME.py top to bottom from notebooks/ (small: GATECORE_SMALL=1) and return the executed notebook."""
    from nbclient import NotebookClient

    nb = read_source(name)
    env = {**os.environ, "GATECORE_SMALL": "1" if small else ""}
    env.pop("PYTHONPATH", None)  # the imports must work because the project is installed, as in Jupyter
    client = NotebookClient(
        nb, timeout=timeout, kernel_name=KERNEL, resources={"metadata": {"path": str(NOTEBOOKS_DIR)}}
    )
    client.execute(env=env)
    return nb


def write(name: str, nb) -> Path:
    """The executed notebook as NAME.ipynb (its source is NAME.py, so the pair stays in sync); the cell ids of
    the previous NAME.ipynb are kept, so a rerun's diff shows what changed, not new ids."""
    import nbformat

    path = NOTEBOOKS_DIR / f"{name}.ipynb"
    if path.is_file():
        before = nbformat.read(path, as_version=4)
        if len(before.cells) == len(nb.cells):
            for cell, old in zip(nb.cells, before.cells):
                cell["id"] = old.get("id", cell.get("id"))
    nb.metadata.pop("jupytext", None)  # the pairing lives in notebooks/jupytext.toml
    nbformat.write(nb, path)
    return path


@dataclass(frozen=True)
class NotebooksConfig:
    names: tuple = option((), "notebooks to run; none: all of notebooks/", positional=True, nargs="*", metavar="NAME")
    small: bool = option(False, "small mode: check that they run; write nothing")


def run(cfg: NotebooksConfig) -> None:
    """Execute each notebook of `cfg` (all by default) and, unless small, write its outputs."""
    for name in cfg.names or names():
        t = time.perf_counter()
        nb = execute(name, cfg.small)
        done = "ran (small mode, not written)" if cfg.small else f"wrote {repo_path(write(name, nb))}"
        print(f"{name}: {done} in {time.perf_counter() - t:.0f}s")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(ap, NotebooksConfig)
    cfg = from_args(NotebooksConfig, ap.parse_args(argv))
    unknown = sorted(set(cfg.names) - set(names()))
    if unknown:
        ap.error(f"no notebook pair for {unknown}; the notebooks are {names()}")
    run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
