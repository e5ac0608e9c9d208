"""`make figures`: regenerate every figure of the project from results/ alone.

Each module listed in STUDIES (study name -> module) provides `make_figures(results_dir, figures_dir)
-> list[Path]` and reads nothing but results/ (docs/design.md §5). A study whose results are not
committed yet is reported, not faked. A results file holding records written from a tree with
uncommitted code changes (a commit id ending in -dirty, or tree_clean false) is named in a warning on
stderr; it is still drawn.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path

from analysis import provenance
from analysis.constants import FIGURES, RESULTS, repo_path

STUDIES = {  # in the order they are drawn
    "convergence": "analysis.convergence.plots",
    "hessian": "analysis.hessian.plots",
    "hessian-race": "analysis.hessian.race.report",
    "finetune": "analysis.finetune.figures",
    "bench": "analysis.bench.latency",
    "decoder": "analysis.decoder.figures",
    "bench-runtimes": "analysis.bench.runtimes",
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=RESULTS, help="folder of committed results (default: results/)")
    ap.add_argument("--figures", type=Path, default=FIGURES, help="output folder (default: figures/)")
    ap.add_argument("--only", nargs="*", default=None, choices=list(STUDIES), help="draw only these studies")
    args = ap.parse_args(argv)
    import matplotlib
    matplotlib.use("Agg")
    args.figures.mkdir(parents=True, exist_ok=True)
    studies = list(STUDIES) if not args.only else [s for s in STUDIES if s in args.only]
    if not studies:
        print("no figure studies registered yet")
    for name in studies:
        t = time.perf_counter()
        made = importlib.import_module(STUDIES[name]).make_figures(args.results, args.figures)
        print(f"{name}: {len(made)} figure(s) in {time.perf_counter() - t:.1f}s")
        for p in made:
            print(f"  {repo_path(p)}")
    _summarise_dirty_sources()
    return 0


def _summarise_dirty_sources() -> None:
    """Repeat at the end, on stderr, which results files came from a dirty tree (each reader warned on its own)."""
    dirty = provenance.DIRTY_SOURCES  # read now: the readers fill it while drawing
    if dirty:
        print(f"warning: {len(dirty)} results file(s) drawn from records written with uncommitted code "
              f"changes (-dirty): {', '.join(dirty)}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
