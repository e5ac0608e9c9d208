"""Markdown tables of one finetuning protocol (a finetune_results.Protocol, used by duck typing).

glue_table(p)        per method: dev metric per task (mean ± std over seeds), GLUE avg, asked -> got removed;
                     a first row with the trivial baseline, cells not clearly above it marked †
paired_table(p)      gates minus lora / bias, per seed (seed s minus seed s), per task and task average
kurtosis_table(p)    kurtosis-weighted minus plain target-keep gates, per task and seed (issue 16)
plateau_table(p)     per task and method, the step where the mean dev curve reaches its final plateau

The tables of the lr search and of the sparsity request are in analysis/finetune/search_tables.py.
"""

from __future__ import annotations

from analysis.constants import GLUE_TASKS
from analysis.finetune.stats import (
    PLATEAU_TAIL,
    PLATEAU_TOL,
    TRIVIAL_MARGIN,
    at_trivial,
    baselines,
    mean,
    mean_curve,
    paired,
    plateau,
    plateau_step,
    pm,
    settled_step,
)

KURTOSIS_SUFFIX = " (kurtosis tau={tau:g})"  # label suffix of the paper's kurtosis-weighted target objective
TRIVIAL_LABEL = "trivial (constant prediction)"
MARK = " †"
BOUND_MARK = " ‡"  # a choice at a bound of the grid rule (analysis/gridsearch.py): the grid could not be extended
RESTART_MARK = " ʳ"  # a seed whose first start failed and was restarted (analysis/finetune/runner.py, restarts)
REFERENCES = ("lora", "bias")  # what every gate setting is paired against
MIN_CURVE_POINTS = 2 * PLATEAU_TAIL  # fewer curve points than this: no plateau table (the curve is too coarse)


def md_row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def md_header(cols) -> list[str]:
    return [md_row(cols), "|" + "---|" * len(cols)]


def _params(n: float) -> str:
    if n != n:  # nan
        return "–"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else f"{n:.0f}"


def _params_range(values) -> str:
    """One count, or the range over tasks (the head's size depends on the number of labels)."""
    vals = [v for v in values if v == v]
    if not vals:
        return "–"
    lo, hi = min(vals), max(vals)
    return _params(lo) if _params(lo) == _params(hi) else f"{_params(lo)}–{_params(hi)}"


def _marked(values, baseline) -> str:
    return pm(values) + (MARK if at_trivial(values, baseline) else "")


def setting_label(label, keep) -> str:
    return label if keep is None else f"{label} keep {keep:g}"


def gate_settings(p) -> list[tuple]:
    """(label, keep) of every gate setting of a protocol, in table order."""
    return [
        (label, keep)
        for label in p.labels
        for keep in p.keeps(label)
        if any(c.label == label and c.keep == keep and c.is_gates for c in p.cells)
    ]


def asked_got(asked, got) -> str:
    return f"{100 * mean(asked):.0f} → {pm([100 * x for x in got])}" if got else "–"


def glue_average_baseline(p, base: dict) -> float | None:
    """The trivial row's GLUE avg: the mean of the tasks' baselines, when every GLUE task has one."""
    vals = [base.get(t) for t in p.glue_tasks]
    return mean(vals) if vals and None not in vals else None


def average_name(p) -> str:
    """'GLUE avg' over all five tasks; over fewer (a protocol still running) the column names its tasks."""
    return "GLUE avg" if set(GLUE_TASKS) <= set(p.glue_tasks) else f"avg ({', '.join(p.glue_tasks)})"


def glue_table(p, base: dict | None = None) -> str:
    """Markdown: the trivial row, then per label (and keep) a row; per task mean ± std over seeds (see module doc)."""
    base = baselines(p) if base is None else base
    tasks = p.tasks
    lines = md_header(
        [
            "method",
            "keep",
            *tasks,
            average_name(p),
            "trainable params",
            "% gated removed (asked → got)",
            "speedup",
            "seeds",
        ]
    )
    avg_base = glue_average_baseline(p, base)
    lines.append(
        md_row(
            [
                TRIVIAL_LABEL,
                "–",
                *(f"{base[t]:.1f}" if t in base else "–" for t in tasks),
                "–" if avg_base is None else f"{avg_base:.1f}",
                "0",
                "–",
                "–",
                "–",
            ]
        )
    )
    for label in p.labels:
        for keep in p.keeps(label):
            cells = [p.cell(t, label, keep) for t in tasks]
            have = [c for c in cells if c is not None]
            avg = p.glue_average(label, keep)
            row = [label, "–" if keep is None else f"{keep:g}"]
            row += [
                _marked(c.dev, base.get(t))
                + (BOUND_MARK if at_bound(c) else "")
                + (RESTART_MARK if restarted(c) else "")
                if c
                else "–"
                for t, c in zip(tasks, cells)
            ]
            row.append(_marked(avg.dev, avg_base) if avg else "–")
            row.append(_params_range([c.trainable for c in have]))
            asked, got = [x for c in have for x in c.asked], [x for c in have for x in c.removed]
            row.append(asked_got(asked, got) if have[0].is_gates else "0")
            speed = [x for c in have for x in c.speedup]
            row.append(f"{mean(speed):.2f}x" if speed else "–")
            row.append(str(max(len(c.records) for c in have)))
            lines.append(md_row(row))
    lines += [
        "",
        f"†: mean not clearly above the trivial baseline of its column: above it by at most {TRIVIAL_MARGIN:g} point "
        "or two standard errors over seeds, whichever is larger (or below it); the cell says nothing about the method.",
    ]
    if any(at_bound(c) for c in p.cells):
        lines.append("‡: a learning rate chosen at a bound of the grid rule (the grid could not be extended further).")
    if notes := restart_notes(p):
        lines.append(
            "ʳ: a seed restarted from a new training seed after a failed start (val no better than a constant "
            "prediction), dev before → after: " + "; ".join(notes) + "."
        )
    return "\n".join(lines)


def restarted(cell) -> bool:
    return any(r.get("failed_starts") for r in cell.records)


def restart_notes(p) -> list[str]:
    """Per restarted seed: each start's dev and training seed, the failed ones first (the cell counts the last)."""
    out = []
    for c in p.cells:
        for r in c.records:
            starts = [*(r.get("failed_starts") or []), {"train_seed": r["config"].get("train_seed"), **r}]
            if len(starts) > 1:
                chain = " → ".join(f"{s['dev_main']:.1f} (train seed {s['train_seed']})" for s in starts)
                out.append(f"{c.task} {setting_label(c.label, c.keep)} seed {r['config'].get('seed')}: {chain}")
    return out


def at_bound(cell) -> bool:
    """Whether a cell's first-seed search chose a learning rate at a bound of the grid rule."""
    return any("bound" in (r.get("grid") or {}).get("status", {}).values() for r in cell.records)


def paired_table(p) -> str | None:
    """Gates minus each reference: per task and over the tasks both have, mean ± std of the per-seed differences."""
    refs = [r for r in REFERENCES if r in p.labels]
    rows = []
    for a in gate_settings(p):
        for ref in refs:
            avg = paired(p, a, (ref, None))
            if avg is None:
                continue
            per_task = [paired(p, a, (ref, None), tasks=[t]) for t in p.tasks]
            row = [f"{setting_label(*a)} − {ref}", *(pm(d.diffs, signed=True) if d else "–" for d in per_task)]
            row += [pm(avg.diffs, signed=True), f"{avg.per_seed()} (over {', '.join(avg.tasks)})"]
            rows.append(md_row(row))
    if not rows:
        return None
    return "\n".join(md_header(["difference (points)", *p.tasks, "task average", "per seed, task average"]) + rows)


def kurtosis_pairs(p) -> list[tuple[tuple, tuple]]:
    """((kurtosis label, keep), (plain label, keep)) for every kurtosis-weighted gate setting with a plain twin."""
    out = []
    for label, keep in gate_settings(p):
        cell = next(c for c in p.cells if c.label == label and c.keep == keep)
        if cell.kurtosis_tau is None:
            continue
        plain = label.replace(KURTOSIS_SUFFIX.format(tau=cell.kurtosis_tau), "")
        if any(c.label == plain and c.keep == keep for c in p.cells):
            out.append(((label, keep), (plain, keep)))
    return out


def kurtosis_table(p) -> str | None:
    """Per task: plain and kurtosis-weighted dev metric, their per-seed difference, and what each removed."""
    rows = []
    for k, plain in kurtosis_pairs(p):
        for t in p.tasks:
            ck, cp = p.cell(t, *k), p.cell(t, *plain)
            d = paired(p, k, plain, tasks=[t])
            if d is None:
                continue
            rows.append(
                md_row(
                    [
                        t,
                        setting_label(*plain),
                        pm(cp.dev),
                        setting_label(*k),
                        pm(ck.dev),
                        pm(d.diffs, signed=True),
                        d.per_seed(),
                        f"{pm([100 * x for x in cp.removed])} / {pm([100 * x for x in ck.removed])}",
                    ]
                )
            )
    if not rows:
        return None
    return "\n".join(
        md_header(
            [
                "task",
                "plain",
                "dev",
                "kurtosis-weighted",
                "dev",
                "kurtosis − plain",
                "per seed",
                "% removed got (plain / kurtosis)",
            ]
        )
        + rows
    )


def _at(step, steps_per_epoch) -> str:
    return "–" if step is None else f"{step} ({step / steps_per_epoch:.2f} ep)" if steps_per_epoch else str(step)


def plateau_table(p) -> str | None:
    """Per task and setting, from the mean dev curve over seeds: plateau (mean of the last points) and when it is reached."""
    rows = []
    for t in p.tasks:
        for label in p.labels:
            for keep in p.keeps(label):
                c = p.cell(t, label, keep)
                steps, m, _ = mean_curve(c.records) if c else ([], [], [])
                if len(steps) < MIN_CURVE_POINTS:
                    continue
                epochs = c.records[0]["config"].get("epochs")
                per_epoch = steps[-1] / epochs if epochs else None  # the last curve point is the last step
                rows.append(
                    md_row(
                        [
                            t,
                            setting_label(label, keep),
                            str(len(c.records)),
                            str(len(steps)),
                            str(steps[-1]),
                            f"{plateau(m):.1f}",
                            _at(plateau_step(steps, m), per_epoch),
                            _at(settled_step(steps, m), per_epoch),
                        ]
                    )
                )
    if not rows:
        return None
    head = [
        "task",
        "setting",
        "seeds",
        "curve points",
        "last step",
        f"plateau (mean of last {PLATEAU_TAIL})",
        f"first within {PLATEAU_TOL:g}",
        f"stays within {PLATEAU_TOL:g} from",
    ]
    return "\n".join(md_header(head) + rows)


def describe(p) -> str:
    """Which protocol, what it is, and where the numbers come from: record count, devices, seeds, commands."""
    devices = sorted({str(r.get("device")) for r in p.records})
    commands = sorted({str(r.get("command")) for r in p.records})
    seeds = sorted({str(r["config"].get("seed")) for r in p.records})
    shown = "\n".join(f"    {c}" for c in commands[:5]) + (
        f"\n    ... ({len(commands)} commands in all)" if len(commands) > 5 else ""
    )
    note = f"Protocol `{p.name}`: {p.note}.\n\n" if getattr(p, "note", "") else ""
    return (
        f"{note}{len(p.records)} runs from `results/finetune/{p.path.name}`; device(s): {', '.join(devices)}; "
        f"seeds: {', '.join(seeds)}. Commands that produced them:\n\n{shown}\n"
    )
