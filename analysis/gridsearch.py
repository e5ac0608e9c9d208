"""The grid rule of every study's learning-rate search: a choice at the edge of its grid extends the grid.

    res = coordinate_search({"gate_lr": [0.01, 0.03, 0.1, 0.3], "lr": [1e-3, 3e-3]}, score)

`score(point)` trains one point ({dim: value}) and returns a comparable key, higher is better (e.g. the
val metric, or (meets the sparsity request, val metric)). The search goes one dimension at a time, in the
order the grids are given, the other dimensions held at their current value (a dimension not yet searched
sits at the FIRST value of its grid: list the starting value first). Along a dimension every grid value is
scored; while the best lies at an edge, the grid grows by one step (`factor`, ~3) beyond that edge and the
new point is scored, until the best is interior, or the next step would leave the stated bounds
(`bounds[dim]`, and at most `max_steps` steps per direction), which is recorded as "bound". A grid of one
value is a fixed setting ("fixed"), not searched. Ties: among equally good values the one nearest the middle
of the grid wins, so a flat line (e.g. every point at the trivial baseline) is not an edge optimum.

Already scored points (`known`, e.g. from an earlier record of the same run) are never trained again, so
a search that was cut short, or that an older, narrower grid left at an edge, resumes where it stood.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable

FACTOR = 3.0
MAX_STEPS = 3  # extensions per direction per dimension: the grid may grow by 3^3 = 27x
BOUNDS = {"lr": (1e-6, 0.1), "gate_lr": (1e-3, 3.0), "lam": (1e-3, 100.0)}
INTERIOR, BOUND, FIXED = "interior", "bound", "fixed"


@dataclass(frozen=True)
class GridResult:
    best: dict  # {dim: chosen value}
    best_score: Any
    tried: list = field(default_factory=list)  # [(point, score)] in the order scored (known points included)
    grids: dict = field(default_factory=dict)  # {dim: sorted values along the line the choice was made on}
    status: dict = field(default_factory=dict)  # {dim: interior | bound | fixed}
    new: int = 0  # points trained by this call (not known before)


def _key(point: dict) -> tuple:
    return tuple(sorted((k, round(float(v), 12)) for k, v in point.items()))


def _pick(values: list[float], scores: list) -> int:
    """Index of the best score; ties go to the value nearest the middle of the grid."""
    top = max(scores)
    mid = (len(values) - 1) / 2
    return min((i for i, s in enumerate(scores) if s == top), key=lambda i: (abs(i - mid), i))


def coordinate_search(
    grids: dict[str, list[float]],
    score: Callable[[dict], Any],
    *,
    factor: float = FACTOR,
    bounds: dict | None = None,
    max_steps: int = MAX_STEPS,
    known: dict[tuple, Any] | None = None,
) -> GridResult:
    """The module docstring's rule; `known` maps `point_key(point)` to an earlier score."""
    if not grids or any(not v for v in grids.values()):
        raise ValueError(f"every grid needs at least one value, got {grids!r}")
    if not factor > 1:
        raise ValueError(f"factor must be > 1, got {factor!r}")
    bounds = {**BOUNDS, **(bounds or {})}
    cache = dict(known or {})
    tried, new = [], 0
    current = {d: float(v[0]) for d, v in grids.items()}
    out_grids, status = {}, {}

    def run(point):
        nonlocal new
        k = _key(point)
        if k not in cache:
            cache[k] = score(dict(point))
            new += 1
        if all(_key(p) != k for p, _ in tried):
            tried.append((dict(point), cache[k]))
        return cache[k]

    best_score = None
    for dim, grid in grids.items():
        values = sorted({float(v) for v in grid})
        if len(values) == 1:
            current[dim], status[dim], out_grids[dim] = values[0], FIXED, values
            best_score = run(current)
            continue
        lo, hi = bounds.get(dim, (0.0, math.inf))
        steps = {"down": 0, "up": 0}
        while True:
            scores = [run({**current, dim: v}) for v in values]
            i = _pick(values, scores)
            edge = "down" if i == 0 else "up" if i == len(values) - 1 else None
            if edge is None:
                status[dim] = INTERIOR
                break
            nxt = float(
                f"{values[0] / factor if edge == 'down' else values[-1] * factor:.12g}"
            )  # 9e-3, not 0.009000000000000001
            if steps[edge] >= max_steps or not (lo * (1 - 1e-9) <= nxt <= hi * (1 + 1e-9)):
                status[dim] = BOUND
                break
            steps[edge] += 1
            values = [nxt, *values] if edge == "down" else [*values, nxt]
        current[dim], out_grids[dim], best_score = values[i], values, scores[i]
    return GridResult(best=dict(current), best_score=best_score, tried=tried, grids=out_grids, status=status, new=new)


def point_key(point: dict) -> tuple:
    """The cache key of a point (values rounded, so 0.1 and 0.1000000000001 are one point)."""
    return _key(point)
