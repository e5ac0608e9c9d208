"""What the studies share, defined once (docs/design.md §5): where things live, which tasks, which methods.

    ROOT / RESULTS / FIGURES    the repository, results/ and figures/
    study_results("hessian")    results/<study>/: every study writes under its own folder
    repo_path(p)                a path as a record shows it: relative to the repository when inside it
    POINTS_SUFFIX               a sweep's resume cache of trained search points, <protocol>.points.jsonl
    GLUE_TASKS                  the GLUE tasks of the studies (folder names), in table order
    METHOD_ORDER, REFERENCE_METHODS   the methods as tables list them; those without gates

The model name is gatecore.OFFLINE_MODEL and the method names are gatecore.METHODS / GATE_METHODS (the library's).
"""

from __future__ import annotations

from pathlib import Path

from gatecore.methods import GATE_METHODS, METHODS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
FIGURES = ROOT / "figures"
STUDIES = ("convergence", "hessian", "finetune", "bench", "decoder")  # results/<study>/
POINTS_SUFFIX = ".points.jsonl"

GLUE_TASKS = ("SST-2", "MRPC", "RTE", "CoLA", "STS-B")
METHOD_ORDER = ("head", "bias", "lora", "full", "gates", "gates+lora")  # fewest trainable parameters first
REFERENCE_METHODS = tuple(m for m in METHODS if m not in GATE_METHODS)  # full, lora, bias, head


def study_results(study: str, results: str | Path = RESULTS) -> Path:
    """results/<study>/, or <results>/<study>/ under another results folder (a test's, a GPU host's)."""
    if study not in STUDIES:
        raise ValueError(f"unknown study {study!r}; the studies are {STUDIES}")
    return Path(results) / study


def repo_path(path: str | Path) -> str:
    """`path` relative to the repository when it lies inside it, else as given: records hold no machine's paths."""
    p = Path(path).resolve()
    return str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(path)
