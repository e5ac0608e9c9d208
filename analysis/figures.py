"""`make figures`: regenerate every figure of the project from results/ alone.

Each module listed in STUDIES (study name -> module) provides `make_figures(results_dir, figures_dir)
-> list[Path]` and reads nothing but results/ (docs/design.md §5). A study whose results are not
committed yet is reported, not faked. Then the generated parts of docs/results.md (DOC_BLOCKS, between
`<!-- generated: NAME -->` and `<!-- end generated -->`, analysis.doc_blocks) are rewritten from the same
results. Warnings on stderr, not failures: a results file holding records written from a tree with uncommitted
code changes (a commit id ending in -dirty, or tree_clean false; its run ids named), which is still drawn; and,
after a full run, every results file (RECORD_SUFFIXES) that no figure or table read: an orphan.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from analysis import doc_blocks, provenance
from analysis.cli import add_options, from_args, option
from analysis.constants import FIGURES, POINTS_SUFFIX, RESULTS, ROOT, repo_path

STUDIES = {  # in the order they are drawn
    "convergence": "analysis.convergence.plots",
    "hessian": "analysis.hessian.plots",
    "hessian-race": "analysis.hessian.race.report",
    "finetune": "analysis.finetune.figures",
    "bench": "analysis.bench.latency",
    "decoder": "analysis.decoder.figures",
    "bench-runtimes": "analysis.bench.runtimes",
}
DOC = ROOT / "docs" / "results.md"
DOC_BLOCKS = {  # generated part of DOC -> (module, function, keyword arguments); the function takes results_dir
    "glue-cpu-converged": ("analysis.finetune.figures", "glue_block", {"protocol": "cpu-converged"}),
    "glue-cpu-fair": ("analysis.finetune.figures", "glue_block", {"protocol": "cpu-fair", "details": True}),
    "glue-cpu-fair-rc": ("analysis.finetune.figures", "glue_block", {"protocol": "cpu-fair-rc", "details": True}),
    "finetune-sizes": ("analysis.finetune.sizes", "size_block", {}),
    "finetune-longer": ("analysis.finetune.longer", "longer_block", {}),
    "finetune-precision": ("analysis.finetune.precision", "precision_block", {}),
    "finetune-variants": ("analysis.finetune.variants", "variants_block", {}),
    "bench-batching": ("analysis.bench.batching", "doc_block", {}),
    "bench-cli-refusals": ("analysis.bench.tables", "refusals_block", {}),
    "bench-kurtosis-overhead": ("analysis.bench.kurtosis", "doc_block", {}),
    "bench-compression-sizes": ("analysis.bench.sizes", "doc_block", {}),
    "bench-latency-profile": ("analysis.bench.tables", "profile_block", {}),
    "bench-train-cost": ("analysis.bench.train_cost", "doc_block", {}),
    "bench-hf-trainer-overhead": ("analysis.bench.hf_trainer", "doc_block", {}),
    "bench-model-steps": ("analysis.bench.model_steps", "doc_block", {}),
    "bench-autocast": ("analysis.bench.autocast", "doc_block", {}),
    "bench-runtimes": ("analysis.bench.runtimes", "doc_block", {}),
    "hessian-exact-timing": ("analysis.hessian.compare", "timing_block", {}),
    "decoder-exactness": ("analysis.decoder.exactness", "doc_block", {}),
    "decoder-finetune": ("analysis.decoder.finetune_report", "doc_block", {}),
}
RECORD_SUFFIXES = (".json", ".jsonl", ".csv")  # results files that hold records (checkpoints and tables are not)


@dataclass(frozen=True)
class AllFiguresConfig:
    results: Path = option(RESULTS, "folder of committed results")
    figures: Path = option(FIGURES, "output folder")
    only: tuple | None = option(None, "draw only these studies; None: all", nargs="*")
    doc: Path | None = option(
        None,
        "document whose generated parts to rewrite; None: docs/results.md with the default --results, none with "
        "another results folder",
    )


def run(cfg: AllFiguresConfig) -> list[Path]:
    """Draw the studies of `cfg`, rewrite the document's generated parts, warn (dirty sources, orphans); returns
    the figures drawn."""
    import matplotlib

    matplotlib.use("Agg")
    cfg.figures.mkdir(parents=True, exist_ok=True)
    studies = list(STUDIES) if not cfg.only else [s for s in STUDIES if s in cfg.only]
    if not studies:
        print("no figure studies registered yet")
    made = []
    for name in studies:
        t = time.perf_counter()
        drawn = importlib.import_module(STUDIES[name]).make_figures(cfg.results, cfg.figures)
        print(f"{name}: {len(drawn)} figure(s) in {time.perf_counter() - t:.1f}s")
        for p in drawn:
            print(f"  {repo_path(p)}")
        made += drawn
    doc = cfg.doc or (DOC if cfg.results == RESULTS else None)
    if doc is not None:
        write_doc_blocks(doc, cfg.results)
    summarise_dirty_sources()
    if not cfg.only:
        warn_orphans(orphans(cfg.results, provenance.READ_SOURCES, made))
    return made


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(ap, AllFiguresConfig, choices={"only": list(STUDIES)})
    run(from_args(AllFiguresConfig, ap.parse_args(argv)))
    return 0


def write_doc_blocks(doc: Path, results_dir) -> None:
    """Rewrite the generated parts of `doc` from results_dir; a part without records keeps its text (a warning)."""
    blocks = {}
    for name, (module, function, kwargs) in DOC_BLOCKS.items():
        text = getattr(importlib.import_module(module), function)(results_dir, **kwargs)
        if text is not None:
            blocks[name] = text
    changed, kept = doc_blocks.update(doc, blocks)
    print(f"{repo_path(doc)}: generated parts {'rewritten' if changed else 'unchanged'}")
    if kept:
        print(
            f"warning: {repo_path(doc)}: generated part(s) left as they were (no results or no generator): "
            f"{', '.join(kept)}",
            file=sys.stderr,
        )


def summarise_dirty_sources() -> None:
    """Repeat at the end, on stderr, which results files came from a dirty tree (each reader warned on its own)."""
    dirty = provenance.DIRTY_SOURCES  # read now: the readers fill it while drawing
    if dirty:
        print(
            f"warning: {len(dirty)} results file(s) drawn from records written with uncommitted code "
            f"changes (-dirty): " + "; ".join(f"{k}: {v}" for k, v in dirty.items()),
            file=sys.stderr,
        )


def orphans(results_dir, read: set[str], made=()) -> list[str]:
    """The record files under results_dir (RECORD_SUFFIXES) that no figure or table read, and none wrote."""
    skip = read | {str(Path(p).resolve()) for p in made}
    files = sorted(p for p in Path(results_dir).rglob("*") if p.is_file() and p.suffix in RECORD_SUFFIXES)
    files = [p for p in files if not p.name.endswith(POINTS_SUFFIX)]  # a sweep's resume cache, not a record to draw
    return [repo_path(p) for p in files if str(p.resolve()) not in skip]


def warn_orphans(names: list[str]) -> None:
    if names:
        print(
            f"warning: {len(names)} results file(s) read by no figure or table (orphans: to be drawn, rerun or "
            f"deleted): {', '.join(names)}",
            file=sys.stderr,
        )


if __name__ == "__main__":
    raise SystemExit(main())
