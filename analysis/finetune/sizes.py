"""The verdict across model sizes (issue 25): protocols run by the same rules on different models, side by side.

size_table(ps)   per task all protocols share, then their average: the trivial baseline, LoRA, bias and each gate
                 setting (dev mean ± std over seeds; asked → got removed), then per gate setting the speedup of
                 its compressed models and its differences to LoRA and to bias paired by seed; one column per
                 protocol (its model and precision named); a verdict line per model, then per gate setting
                 how its gaps to LoRA and bias change from the smaller model to the larger
plot_sizes(ps)   those paired differences (task average) against the model's parameter count
size_block(dir)  the table of SIZE_PROTOCOLS for docs/results.md; None until every one of them has records
"""

from __future__ import annotations

from pathlib import Path

from analysis.finetune.results import Protocol, load_protocols
from analysis.finetune.stats import CLAIM_GAP, baselines, mean, paired, pm
from analysis.finetune.tables import (
    REFERENCES,
    RESTART_MARK,
    asked_got,
    gate_settings,
    md_header,
    md_row,
    restarted,
    setting_label,
)

SIZE_PROTOCOLS = ("cpu-fair-rc", "cpu-base")  # MiniLM's fair fight and its base-size twin (same grid rule, controller)


def model_of(p: Protocol) -> str:
    names = sorted({str(r["config"].get("model", "?")) for r in p.records})
    return "/".join(names)


def precision_of(p: Protocol) -> str:
    """How its records trained: float32, or '<dtype> autocast' (analysis/finetune/train.py)."""
    names = sorted({r["config"].get("autocast") or "float32" for r in p.records})
    return "/".join(n if n == "float32" else f"{n} autocast" for n in names)


def params_of(p: Protocol) -> float:
    """The model's parameter count (the median record's total; heads differ by a few hundred)."""
    totals = sorted((r.get("params") or {}).get("total", 0) for r in p.records)
    return float(totals[len(totals) // 2]) if totals else float("nan")


def shared_tasks(ps: list[Protocol]) -> list[str]:
    return [t for t in ps[0].tasks if all(t in p.tasks for p in ps[1:])]


def _settings(ps: list[Protocol]) -> list[tuple]:
    """The references, then every gate setting any protocol has, in first-seen order."""
    out = [(r, None) for r in REFERENCES if any(r in p.labels for p in ps)]
    for p in ps:
        out += [s for s in gate_settings(p) if s not in out]
    return out


def _setting_cell(p: Protocol, setting: tuple, tasks: list[str]) -> str:
    if len(tasks) == 1:
        c = p.cell(tasks[0], *setting)
        if c is None:
            return "–"
        return (
            pm(c.dev)
            + (f" ({asked_got(c.asked, c.removed)})" if c.is_gates else "")
            + (RESTART_MARK if restarted(c) else "")
        )
    avg = p.glue_average(*setting, tasks=tasks)
    return pm(avg.dev) if avg else "–"


def _speedup(p: Protocol, setting: tuple, tasks: list[str]) -> str:
    """Mean dense / compressed latency of the setting's runs on `tasks` (every task must have the cell)."""
    cells = [p.cell(t, *setting) for t in tasks]
    values = [x for c in cells if c is not None for x in c.speedup]
    return f"{mean(values):.2f}x" if values and None not in cells else "–"


def _paired(p: Protocol, gate: tuple, ref: str, tasks: list[str]):
    """Gate setting minus reference, paired by seed, over exactly `tasks` (None when one of them lacks a cell)."""
    d = paired(p, gate, (ref, None), tasks=tasks)
    return d if d is not None and d.tasks == list(tasks) else None


def _diff_cell(p: Protocol, gate: tuple, ref: str, tasks: list[str]) -> str:
    d = _paired(p, gate, ref, tasks)
    return str(d) if d else "–"


def size_table(ps: list[Protocol]) -> str | None:
    """Markdown (see module doc); None when the protocols share no task."""
    tasks = shared_tasks(ps)
    if not tasks:
        return None
    settings = _settings(ps)
    gates = [s for s in settings if s[1] is not None]
    groups = [[t] for t in tasks] + ([tasks] if len(tasks) > 1 else [])
    lines = md_header(["task", "setting", *(f"{model_of(p)} (`{p.name}`, {precision_of(p)})" for p in ps)])
    for group in groups:
        name = group[0] if len(group) == 1 else f"average ({', '.join(group)})"
        base = [baselines(p) for p in ps]
        trivial = [f"{mean([b[t] for t in group]):.1f}" if all(t in b for t in group) else "–" for b in base]
        lines.append(md_row([name, "trivial (constant prediction)", *trivial]))
        for s in settings:
            lines.append(md_row([name, setting_label(*s), *(_setting_cell(p, s, group) for p in ps)]))
        for g in gates:
            speed = [_speedup(p, g, group) for p in ps]
            if any(c != "–" for c in speed):
                lines.append(md_row([name, f"{setting_label(*g)}: speedup, dense / compressed", *speed]))
            for ref in REFERENCES:
                cells = [_diff_cell(p, g, ref, group) for p in ps]
                if any(c != "–" for c in cells):
                    lines.append(md_row([name, f"{setting_label(*g)} − {ref} (paired)", *cells]))
    lines += ["", *(f"- {line}" for line in verdict(ps, tasks) + trend(ps, tasks))]
    if any(restarted(c) for p in ps for c in p.cells):
        lines.append(
            f"-{RESTART_MARK}: a seed restarted after a failed start (each start's dev: results/glue_table.md)."
        )
    return "\n".join(lines)


def verdict(ps: list[Protocol], tasks: list[str]) -> list[str]:
    """Per model and gate setting, on the task average: within CLAIM_GAP of LoRA? above bias? (paired by seed);
    then the tasks on which the setting alone comes within CLAIM_GAP of LoRA."""
    out = []
    for p in ps:
        for g in gate_settings(p):
            d = {ref: _paired(p, g, ref, tasks) for ref in REFERENCES}
            if d["lora"] is None:
                continue
            removed = [x for t in tasks if (c := p.cell(t, *g)) for x in c.removed]
            text = f"{model_of(p)}, {setting_label(*g)} ({100 * mean(removed):.1f}% removed): "
            text += (
                f"{d['lora'].mean:+.1f} vs LoRA, "
                + ("within" if d["lora"].mean >= -CLAIM_GAP else "not within")
                + f" {CLAIM_GAP:g} point"
            )
            if d["bias"] is not None:
                text += f"; {d['bias'].mean:+.1f} vs bias, " + ("above" if d["bias"].mean > 0 else "not above") + " it"
            n = len(d["lora"].seeds)
            close = [t for t in tasks if (e := _paired(p, g, "lora", [t])) and e.mean >= -CLAIM_GAP]
            out.append(
                text + f" (task average, {n} seed{'s' * (n > 1)}); within {CLAIM_GAP:g} point of LoRA on "
                f"{', '.join(close) or 'no task'} ({len(close)} of {len(tasks)})."
            )
    return out


def trend(ps: list[Protocol], tasks: list[str]) -> list[str]:
    """Per gate setting and reference every model has on every task: the paired difference from the smallest
    model to the largest, on the task average and per task; does the gap shrink with size?"""
    ps = sorted(ps, key=params_of)
    out = []
    for g in [g for g in gate_settings(ps[0]) if all(g in gate_settings(p) for p in ps[1:])]:
        for ref in REFERENCES:
            d = [_paired(p, g, ref, tasks) for p in ps]
            per = {t: [_paired(p, g, ref, [t]) for p in ps] for t in tasks}
            if None in d or any(None in e for e in per.values()):
                continue
            steps = lambda ds: " → ".join(f"{x.mean:+.1f}" for x in ds)  # noqa: E731
            closer = [t for t, e in per.items() if e[-1].mean > e[0].mean]
            out.append(
                f"{setting_label(*g)} − {ref} from {' to '.join(model_of(p) for p in ps)}: {steps(d)} on the "
                f"task average ({'closer to' if d[-1].mean > d[0].mean else 'further from'} {ref} at the larger "
                f"size); per task {', '.join(f'{t} {steps(e)}' for t, e in per.items())}: closer on "
                f"{', '.join(closer) or 'no task'} ({len(closer)} of {len(tasks)})."
            )
    return out


def pick(protocols: list[Protocol], names=SIZE_PROTOCOLS) -> list[Protocol] | None:
    """The named protocols in order, or None unless every one has records."""
    found = {p.name: p for p in protocols}
    return [found[n] for n in names] if all(n in found for n in names) else None


def size_block(results_dir) -> str | None:
    ps = pick(load_protocols(results_dir))
    return None if ps is None else size_table(ps)


def plot_sizes(ps: list[Protocol], path: Path) -> Path | None:
    """Gates minus LoRA / bias (task average, paired by seed, mean ± std) vs parameter count; one line per gate
    setting, the per-task means as small markers; the band is the claim's 1-point gap."""
    import matplotlib.pyplot as plt

    from analysis.plotting import save_figure

    tasks = shared_tasks(ps)
    if not tasks:
        return None
    x = [params_of(p) for p in ps]
    fig, axes = plt.subplots(1, len(REFERENCES), figsize=(5 * len(REFERENCES), 3.8), sharey=True)
    for ax, ref in zip(axes, REFERENCES):
        for g in [s for s in _settings(ps) if s[1] is not None]:
            avg = [_paired(p, g, ref, tasks) for p in ps]
            pts = [(xi, d) for xi, d in zip(x, avg) if d is not None]
            if not pts:
                continue
            line = ax.errorbar(
                [xi for xi, _ in pts],
                [d.mean for _, d in pts],
                yerr=[d.std for _, d in pts],
                marker="o",
                capsize=3,
                label=setting_label(*g),
            )
            for t in tasks:
                per = [(xi, _paired(p, g, ref, [t])) for xi, p in zip(x, ps)]
                ax.scatter(
                    [xi for xi, d in per if d],
                    [d.mean for _, d in per if d],
                    s=10,
                    alpha=0.4,
                    color=line[0].get_color(),
                )
        ax.axhspan(-CLAIM_GAP, CLAIM_GAP, color="0.9", zorder=0)
        ax.axhline(0, color="0.5", lw=0.8)
        ax.set_xscale("log")
        ax.set_xlim(min(x) / 1.6, max(x) * 1.6)
        ax.set_xticks(x, [f"{model_of(p)}\n{xi / 1e6:.0f}M" for p, xi in zip(ps, x)], fontsize=7)
        ax.minorticks_off()
        ax.set_title(f"gates − {ref}, dev points (paired by seed)", fontsize=9)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    axes[0].set_ylabel(f"average over {', '.join(tasks)}\n(dots: each task)")
    fig.tight_layout()
    return save_figure(fig, path)
