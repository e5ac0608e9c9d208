"""Is it a matter of training longer? (issue 24, item 4) A long protocol beside the one whose choices it trains.

longer_table(short, long)  per task of the long protocol: each setting's dev in both (on the seeds both have) and
                           the change, paired by seed; then gates − LoRA and gates − bias in both and how far
                           each gap moved; a verdict line per task, gate setting and reference
longer_block(dir)          that table for LONG_PAIR, for docs/results.md; None until both protocols have records
"""

from __future__ import annotations

from analysis.finetune.results import Protocol, load_protocols
from analysis.finetune.stats import mean, paired, pm
from analysis.finetune.tables import REFERENCES, asked_got, gate_settings, md_header, md_row, setting_label

LONG_PAIR = ("cpu-fair", "cpu-fair-long")  # the protocol, then its 4x-steps constant-lr twin
MOVE = 1.0  # the issue: a gap that moves by more than this asks for 3 seeds, and is what the README may state


def _length(p: Protocol, task: str) -> str:
    """'3 epochs, linear lr': how the protocol's records of `task` trained."""
    cfgs = [r["config"] for c in p.cells if c.task == task for r in c.records]
    epochs = sorted({c.get("epochs") for c in cfgs}, key=str)
    schedules = sorted({c.get("schedule", "linear") for c in cfgs})
    return f"{'/'.join(map(str, epochs))} epochs, {'/'.join(schedules)} lr"


def _by_seed(cell) -> dict:
    return {r["config"].get("seed"): r for r in cell.records} if cell else {}


def _dev_cell(cell, seeds) -> str:
    by = _by_seed(cell)
    dev = [by[s]["dev_main"] for s in seeds]
    text = pm(dev)
    if cell.is_gates:
        text += f" ({asked_got([by[s].get('removed_asked') or 0.0 for s in seeds], [by[s]['removed_fraction'] for s in seeds])})"
    return text


def _change(a: dict, b: dict, seeds) -> str:
    """b − a per seed ('m ± s (s0: ..., s1: ...)')."""
    d = [b[s] - a[s] for s in seeds]
    return pm(d, signed=True) + " (" + ", ".join(f"s{s}: {x:+.1f}" for s, x in zip(seeds, d)) + ")"


def _gap(p: Protocol, gate: tuple, ref: str, task: str) -> dict:
    d = paired(p, gate, (ref, None), tasks=[task])
    return dict(zip(d.seeds, d.diffs)) if d else {}


def longer_table(short: Protocol, long: Protocol) -> str | None:
    """Markdown (see module doc); None when the long protocol has no task the short one has."""
    tasks = [t for t in long.tasks if t in short.tasks]
    if not tasks:
        return None
    cols = ["task", "setting", f"`{short.name}`", f"`{long.name}`", "long − short (paired by seed)"]
    lines, verdicts = md_header(cols), []
    for t in tasks:
        name = f"{t} ({_length(short, t)} → {_length(long, t)})"
        settings = [(r, None) for r in REFERENCES] + gate_settings(long)
        for s in settings:
            a, b = short.cell(t, *s), long.cell(t, *s)
            seeds = sorted(set(_by_seed(a)) & set(_by_seed(b)), key=str)
            if not seeds:
                continue
            dev_a = {k: r["dev_main"] for k, r in _by_seed(a).items()}
            dev_b = {k: r["dev_main"] for k, r in _by_seed(b).items()}
            lines.append(
                md_row(
                    [name, setting_label(*s), _dev_cell(a, seeds), _dev_cell(b, seeds), _change(dev_a, dev_b, seeds)]
                )
            )
        for g in gate_settings(long):
            for ref in REFERENCES:
                ga, gb = _gap(short, g, ref, t), _gap(long, g, ref, t)
                seeds = sorted(set(ga) & set(gb), key=str)
                if not seeds:
                    continue
                label = f"{setting_label(*g)} − {ref}"
                lines.append(
                    md_row(
                        [
                            name,
                            label,
                            pm([ga[s] for s in seeds], signed=True),
                            pm([gb[s] for s in seeds], signed=True),
                            _change(ga, gb, seeds),
                        ]
                    )
                )
                move = mean(gb[s] - ga[s] for s in seeds)
                verdicts.append(
                    f"{t}, {label}: {mean(ga[s] for s in seeds):+.1f} → {mean(gb[s] for s in seeds):+.1f} with "
                    f"{_length(long, t)}: the gates {'gained' if move > 0 else 'lost'} {abs(move):.1f} points on {ref}, "
                    f"{'more' if abs(move) > MOVE else 'not more'} than {MOVE:g} ({len(seeds)} seed{'s' * (len(seeds) > 1)})."
                )
    return "\n".join(lines + ([""] + [f"- {v}" for v in verdicts] if verdicts else []))


def longer_block(results_dir, pair=LONG_PAIR) -> str | None:
    found = {p.name: p for p in load_protocols(results_dir)}
    if not all(n in found for n in pair):
        return None
    return longer_table(found[pair[0]], found[pair[1]])
