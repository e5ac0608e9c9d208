"""GLUE metrics in plain Python (no sklearn): accuracy, F1, Matthews correlation, Pearson, Spearman.

Each function returns a fraction; `task_metrics` returns points (x 100), as GLUE tables report them.
"""

from __future__ import annotations

import math

MAIN_METRIC = {
    "sst2": "accuracy",
    "cola": "matthews",
    "mrpc": "f1",
    "rte": "accuracy",
    "stsb": "pearson",
    "qnli": "accuracy",
    "rotten_tomatoes": "accuracy",
}
# the main metric and the ones reported beside it
REPORTED = {
    "accuracy": ("accuracy",),
    "f1": ("f1", "accuracy"),
    "matthews": ("matthews", "accuracy"),
    "pearson": ("pearson", "spearman"),
}


def _check(preds, labels):
    preds, labels = list(preds), list(labels)
    if len(preds) != len(labels) or not preds:
        raise ValueError(f"need as many predictions as labels (> 0), got {len(preds)} and {len(labels)}")
    return preds, labels


def accuracy(preds, labels) -> float:
    preds, labels = _check(preds, labels)
    return sum(int(p) == int(y) for p, y in zip(preds, labels)) / len(labels)


def _confusion(preds, labels):
    preds, labels = _check(preds, labels)
    tp = sum(p == 1 and y == 1 for p, y in zip(preds, labels))
    tn = sum(p == 0 and y == 0 for p, y in zip(preds, labels))
    fp = sum(p == 1 and y == 0 for p, y in zip(preds, labels))
    fn = sum(p == 0 and y == 1 for p, y in zip(preds, labels))
    return tp, tn, fp, fn


def f1(preds, labels) -> float:
    """F1 of the positive class (label 1); 0 when there is no true or predicted positive."""
    tp, _, fp, fn = _confusion([int(p) for p in preds], [int(y) for y in labels])
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def matthews(preds, labels) -> float:
    """(tp tn - fp fn) / sqrt((tp+fp)(tp+fn)(tn+fp)(tn+fn)); 0 when a marginal is empty (as sklearn)."""
    tp, tn, fp, fn = _confusion([int(p) for p in preds], [int(y) for y in labels])
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / den if den else 0.0


def pearson(x, y) -> float:
    x, y = _check([float(v) for v in x], [float(v) for v in y])
    mx, my = sum(x) / len(x), sum(y) / len(y)
    sxy = sum((a - mx) * (b - my) for a, b in zip(x, y))
    sxx, syy = sum((a - mx) ** 2 for a in x), sum((b - my) ** 2 for b in y)
    return sxy / math.sqrt(sxx * syy) if sxx and syy else 0.0


def _ranks(v) -> list[float]:
    """Ranks from 1, ties get their average rank."""
    order = sorted(range(len(v)), key=lambda i: v[i])
    ranks = [0.0] * len(v)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and v[order[j + 1]] == v[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x, y) -> float:
    x, y = _check(x, y)
    return pearson(_ranks([float(v) for v in x]), _ranks([float(v) for v in y]))


FUNCTIONS = {"accuracy": accuracy, "f1": f1, "matthews": matthews, "pearson": pearson, "spearman": spearman}


def task_metrics(metric: str, preds, labels) -> dict:
    """{name: points} for the main `metric` and those reported beside it."""
    if metric not in REPORTED:
        raise ValueError(f"unknown metric {metric!r}; expected one of {sorted(REPORTED)}")
    return {m: 100.0 * FUNCTIONS[m](preds, labels) for m in REPORTED[metric]}
