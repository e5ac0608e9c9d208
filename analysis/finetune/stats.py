"""Numbers behind the finetuning table: trivial baselines, paired seed differences, plateau steps, the claim.

Everything here takes plain labels, curves, or a protocol (analysis.finetune.results.Protocol, used by
duck typing so this module imports nothing from there):

    trivial_baseline(labels, "f1")             best score of a constant prediction on these dev labels
    paired(p, ("gates", 0.7), ("lora", None))  per-seed differences of the GLUE average (seed s minus seed s)
    plateau_step(steps, values)                first step within 0.5 points of the curve's final plateau
    claim_check(p)                             the issue's goal on one protocol's GLUE average
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from functools import lru_cache

from analysis.metrics import task_metrics
from gatecore.sparsity_control import TOL

TRIVIAL_MARGIN = 1.0  # a cell whose mean is not more than this above the trivial baseline is marked
PLATEAU_TOL, PLATEAU_TAIL = 0.5, 3  # plateau: the mean of the last 3 curve points; "reached" within 0.5 points
CLAIM_REMOVED, CLAIM_GAP = 0.30, 1.0  # the goal: >= 30% of gated weights removed, within 1 point of LoRA


def mean(xs) -> float:
    xs = list(xs)
    return statistics.fmean(xs) if xs else float("nan")


def std(xs) -> float:
    xs = list(xs)
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def pm(values, digits=1, signed=False) -> str:
    """'m ± s' (just 'm' for one value, '–' for none)."""
    values = list(values)
    if not values:
        return "–"
    s = f"{mean(values):{'+' if signed else ''}.{digits}f}"
    return s + (f" ± {std(values):.{digits}f}" if len(values) > 1 else "")


# ---- trivial baseline --------------------------------------------------------------------------------


def trivial_baseline(labels, metric: str) -> float:
    """Best dev score (points) of a constant prediction, scored with the task's own metric.

    Classification: every class tried as the constant, the best kept; for accuracy that is the majority
    class, for F1 of the positive class it is "always positive", Matthews is 0 for any constant.
    Regression (Pearson, Spearman): a constant has no correlation (undefined, reported as 0).
    """
    labels = list(labels)
    if metric in ("pearson", "spearman"):
        return 0.0
    n = len(labels)
    return max(task_metrics(metric, [c] * n, labels)[metric] for c in sorted({int(y) for y in labels}))


@lru_cache(maxsize=None)
def _task_baseline(task: str, dev_examples) -> float | None:
    from analysis.data import DataError, load_task

    try:
        t = load_task(task, dev_examples=dev_examples)
    except (DataError, OSError, ValueError) as e:  # a task without local data gets no baseline, said once
        print(f"trivial baseline: no dev labels for {task!r} ({e}); left out")
        return None
    return trivial_baseline(t.dev.labels, t.metric)


def baselines(p) -> dict[str, float]:
    """{task as shown: trivial baseline} for the tasks of a protocol, from the same dev split its records scored."""
    out = {}
    for c in p.cells:
        if c.task not in out:
            cfg = c.records[0]["config"]
            b = _task_baseline(str(cfg.get("task")), cfg.get("dev_examples"))
            if b is not None:
                out[c.task] = b
    return out


def at_trivial(values, baseline: float | None) -> bool:
    """True when the seeds' mean is not clearly above the trivial baseline: within TRIVIAL_MARGIN of it, or
    within two standard errors over seeds (a 1.6 ± 2.2 Matthews over 3 seeds says nothing), or below it."""
    values = [values] if isinstance(values, (int, float)) else list(values)
    m = mean(values)
    if baseline is None or m != m:  # no baseline, or no values (nan)
        return False
    return m - baseline <= max(TRIVIAL_MARGIN, 2 * std(values) / len(values) ** 0.5)


# ---- the sparsity request ------------------------------------------------------------------------------


def _correction(entry: dict) -> dict:
    corr = entry.get("correction")
    return corr if isinstance(corr, dict) else {}


def removed_before(entry: dict) -> float | None:
    """The removed fraction a record (or search entry) reached before the final correction: the controller's alone
    (its own removed fraction when no correction was recorded)."""
    return _correction(entry).get("removed_before", entry.get("removed_fraction"))


def gates_changed(entry: dict) -> int:
    """How many gates a record's (or search entry's) final correction changed (0 without a correction)."""
    return _correction(entry).get("gates_changed", 0)


def controller_met(entry: dict, tol: float = TOL) -> bool:
    """Whether a record's (or search entry's) removed fraction before the final correction was within `tol` of the
    request (True for runs without gates or without a recorded correction)."""
    corr = _correction(entry)
    if corr.get("removed_before") is None or entry.get("removed_asked") is None:
        return True
    return abs(corr["removed_before"] - entry["removed_asked"]) <= tol


def training_removed(entry: dict, tol: float = TOL) -> bool:
    """Whether training itself removed what was asked: the fraction before the final correction no more than
    `tol` short of the request: the controller met it, or overshot (the correction only reopened gates training
    had closed). True for runs without gates or without a recorded correction."""
    return controller_met(entry, tol) or _correction(entry)["removed_before"] > entry["removed_asked"]


# ---- paired differences over seeds -------------------------------------------------------------------


@dataclass
class Paired:
    """Seed s of setting `a` minus seed s of setting `b`, each averaged over the same tasks."""

    a: tuple
    b: tuple
    tasks: list[str]
    seeds: list = field(default_factory=list)
    diffs: list[float] = field(default_factory=list)

    @property
    def mean(self) -> float:
        return mean(self.diffs)

    @property
    def std(self) -> float:
        return std(self.diffs)

    def per_seed(self) -> str:
        return ", ".join(f"s{s}: {d:+.1f}" for s, d in zip(self.seeds, self.diffs))

    def __str__(self) -> str:
        return f"{pm(self.diffs, signed=True)} ({self.per_seed()})"


def _by_seed(cell) -> dict:
    return {r["config"].get("seed"): r["dev_main"] for r in cell.records}


def paired(p, a: tuple, b: tuple, tasks=None) -> Paired | None:
    """Per-seed difference a - b of the mean dev metric over `tasks` (default: the GLUE tasks both have, or every
    task both have in a protocol without GLUE tasks).

    a, b: (label, keep). Only seeds present in every used cell of both count, so each seed's two
    averages cover the same tasks. None when no task or no common seed is left.
    """
    tasks = [t for t in (tasks or p.glue_tasks or p.tasks) if p.cell(t, *a) is not None and p.cell(t, *b) is not None]
    if not tasks:
        return None
    per_task = [(_by_seed(p.cell(t, *a)), _by_seed(p.cell(t, *b))) for t in tasks]
    seeds = set.intersection(*(set(x) & set(y) for x, y in per_task))
    out = Paired(a, b, tasks)
    for s in sorted(seeds, key=str):
        out.seeds.append(s)
        out.diffs.append(mean(x[s] for x, _ in per_task) - mean(y[s] for _, y in per_task))
    return out if out.seeds else None


# ---- curves and plateaus -----------------------------------------------------------------------------


def mean_curve(records: list[dict], key: str = "dev_main") -> tuple[list[int], list[float], list[float]]:
    """(steps, mean, std over seeds) of one curve quantity; a step averages the seeds that recorded it."""
    by_step: dict[int, list[float]] = {}
    for r in records:
        for pt in r.get("curve") or []:
            if pt.get(key) is not None:
                by_step.setdefault(int(pt["step"]), []).append(float(pt[key]))
    steps = sorted(by_step)
    return steps, [mean(by_step[s]) for s in steps], [std(by_step[s]) for s in steps]


def plateau(values, tail: int = PLATEAU_TAIL) -> float:
    """The final plateau of a curve: the mean of its last `tail` points."""
    return mean(list(values)[-tail:])


def plateau_step(steps, values, tol: float = PLATEAU_TOL, tail: int = PLATEAU_TAIL) -> int | None:
    """First step at which the curve comes within `tol` points of its plateau (None for an empty curve)."""
    level = plateau(values, tail)
    return next((s for s, v in zip(steps, values) if abs(v - level) <= tol), None)


def settled_step(steps, values, tol: float = PLATEAU_TOL, tail: int = PLATEAU_TAIL) -> int | None:
    """First step from which every later point stays within `tol` points of the plateau."""
    level, out = plateau(values, tail), None
    for s, v in zip(steps, values):
        if abs(v - level) > tol:
            out = None
        elif out is None:
            out = s
    return out


# ---- the claim ---------------------------------------------------------------------------------------


@dataclass
class ClaimCheck:
    """The issue's goal on one protocol's GLUE average: gates with >= 30% removed within 1 point of LoRA, above bias."""

    protocol: str
    lora: float
    bias: float
    full: float
    gate_label: str | None = None
    gate_keep: float | None = None
    gate_dev: float = float("nan")
    gate_std: float = float("nan")
    gate_removed: float = float("nan")

    @property
    def within_gap(self) -> bool:
        return self.gate_dev >= self.lora - CLAIM_GAP

    @property
    def beats_bias(self) -> bool:
        return self.gate_dev > self.bias

    def __str__(self) -> str:
        if self.gate_label is None:
            return (
                f"[{self.protocol}] no gate setting removed >= {CLAIM_REMOVED:.0%} of the gated weights on the GLUE "
                f"average (LoRA {self.lora:.1f}, bias {self.bias:.1f}, full {self.full:.1f})"
            )
        return (
            f"[{self.protocol}] GLUE average (dev, points): LoRA {self.lora:.1f}, full {self.full:.1f}, bias {self.bias:.1f}; "
            f"best gates with >= {CLAIM_REMOVED:.0%} removed: {self.gate_label} keep {self.gate_keep:g} = "
            f"{self.gate_dev:.1f} ± {self.gate_std:.1f} at {100 * self.gate_removed:.0f}% removed -> "
            f"{self.gate_dev - self.lora:+.1f} vs LoRA ({'within' if self.within_gap else 'NOT within'} {CLAIM_GAP:g} point), "
            f"{self.gate_dev - self.bias:+.1f} vs bias ({'beats' if self.beats_bias else 'does NOT beat'} the control)"
        )


def claim_check(p) -> ClaimCheck | None:
    """None when the protocol lacks the GLUE averages of lora and bias."""
    refs = {m: p.glue_average(m) for m in ("lora", "bias", "full")}
    if refs["lora"] is None or refs["bias"] is None:
        return None
    out = ClaimCheck(
        p.name, refs["lora"].mean(), refs["bias"].mean(), refs["full"].mean() if refs["full"] else float("nan")
    )
    for c in {(c.label, c.keep) for c in p.cells if c.is_gates}:
        avg = p.glue_average(*c)
        # at the tables' precision (0.1 point): 29.98% removed for 30% asked counts as 30%
        if avg is None or round(avg.mean("removed_fraction"), 3) < CLAIM_REMOVED:
            continue
        if out.gate_label is None or avg.mean() > out.gate_dev:
            out.gate_label, out.gate_keep, out.gate_dev = c[0], c[1], avg.mean()
            out.gate_std, out.gate_removed = avg.std(), avg.mean("removed_fraction")
    return out
