"""Markdown tables of a protocol's lr search and of its sparsity request (a results.Protocol, by duck typing).

search_table(p)       per method and task: the lrs chosen on val, the grid points tried, interior or at a bound
gate_search_table(p)  every gate setting a first-seed search trained: what training removed alone, the correction
removal_table(p)      per gate setting and task: removed fraction asked -> got, and what the final correction did
removal_summary(p)    over all gate runs: the controller alone within 2 points, and runs the correction cost > 1 point
correction_table(p)   per gate run the correction changed: removed and val/dev before -> after it (and recovery)
"""

from __future__ import annotations

from analysis.finetune.stats import controller_met, gates_changed, pm, removed_before
from analysis.finetune.tables import asked_got, gate_settings, md_header, md_row, setting_label
from gatecore.sparsity_control import TOL


def _lr(x: float) -> str:
    return f"{x:.0e}".replace("e-0", "e-")


def search_table(p) -> str | None:
    """Per setting and task, the searched lrs of its first-seed run: chosen value, the values tried, and whether
    the choice is interior, at a bound, or fixed; later seeds train that choice. None without grid records."""
    rows = []
    for label in p.labels:
        for keep in p.keeps(label):
            cells = [p.cell(t, label, keep) for t in p.tasks]
            for c in cells:
                rec = next((r for r in (c.records if c else []) if r.get("grid")), None)
                if rec is None:
                    continue
                g = rec["grid"]
                parts = []
                for dim, status in g["status"].items():
                    tried = " ".join(_lr(v) for v in g["tried"][dim])
                    parts.append(f"{dim} **{_lr(rec['config'][dim])}** of {tried} ({status})")
                source = (
                    "" if not rec["spec"].get("grid_from") else " (the choice of run " + rec["spec"]["grid_from"] + ")"
                )
                rows.append(
                    md_row(
                        [
                            setting_label(label, keep),
                            c.task,
                            "; ".join(parts) + source,
                            str(len(rec.get("hp_search") or [1])),
                        ]
                    )
                )
    if not rows:
        return None
    return "\n".join(
        md_header(["setting", "task", "chosen on val, of the values tried (status)", "points trained"]) + rows
    )


def gate_search_table(p) -> str | None:
    """Every point the first-seed search of each gate setting trained: gate lr, lr, the removed fraction the
    controller reached alone (before the final correction), the gates the correction changed, and val after
    every adjustment. A point whose controller missed the request by more than its tolerance is not chosen
    (analysis/finetune/runner.py entry_score), however high its val."""
    rows = []
    for label, keep in gate_settings(p):
        for t in p.tasks:
            c = p.cell(t, label, keep)
            rec = next((r for r in (c.records if c else []) if r.get("grid") and r.get("hp_search")), None)
            if rec is None:
                continue
            chosen = (rec["config"].get("gate_lr"), rec["config"]["lr"])
            for e in sorted(rec["hp_search"], key=lambda e: (e.get("gate_lr") or 0, e["lr"])):
                before = removed_before(e)
                rows.append(
                    md_row(
                        [
                            setting_label(label, keep),
                            t,
                            f"{e.get('gate_lr', '–')}",
                            _lr(e["lr"]),
                            "–" if before is None else f"{100 * before:.1f}",
                            str(gates_changed(e)),
                            f"{e['val_main']:.1f}" + (" ◀" if (e.get("gate_lr"), e["lr"]) == chosen else ""),
                        ]
                    )
                )
    if not rows:
        return None
    head = [
        "gate setting",
        "task",
        "gate lr",
        "lr",
        "% removed by training (before correction)",
        "gates the correction changed",
        "val after every adjustment (◀ chosen)",
    ]
    return "\n".join(md_header(head) + rows)


def removal_table(p) -> str | None:
    """Per gate setting and task: % removed asked -> got (mean ± std over seeds), and the final exact correction."""
    settings = gate_settings(p)
    if not settings:
        return None
    tasks = p.tasks
    lines = md_header(
        [
            "gate setting",
            *tasks,
            "largest gap, got vs asked (points)",
            "before correction (controller alone)",
            "controller alone within 2 points",
            "gates changed by correction",
            "encoder linear weights compress removes, default / hidden layout (%)",
        ]
    )
    for label, keep in settings:
        cells = [p.cell(t, label, keep) for t in tasks]
        recs = [r for c in cells if c is not None for r in c.records]
        gaps = [abs(g - a) for c in cells if c is not None for g, a in zip(c.removed, c.asked)]
        corr = [r["correction"] for r in recs if isinstance(r.get("correction"), dict)]
        row = [setting_label(label, keep)] + [asked_got(c.asked, c.removed) if c else "–" for c in cells]
        row.append(f"{100 * max(gaps):.1f}" if gaps else "–")
        row.append(pm([100 * x["removed_before"] for x in corr]) if corr else "– (not recorded)")
        alone = [controller_met(r) for r in recs if isinstance(r.get("correction"), dict)]
        row.append(f"{sum(alone)} of {len(alone)}" if alone else "–")
        row.append(
            pm([x["gates_changed"] for x in corr], digits=0) + f" (max {max(x['gates_changed'] for x in corr)})"
            if corr
            else "–"
        )
        row.append(_physical(recs))
        lines.append(md_row(row))
    return "\n".join(lines)


def _physical(recs: list[dict]) -> str:
    """What the compressed models drop of the encoder's linear weights: closed rows and columns on the residual
    stream stay in the default layout (only `layout="hidden"` cuts them), so this can fall well short of the
    removed fraction of the gated weights."""
    sizes = [(r.get("compressed") or {}).get("size") or {} for r in recs]
    inner = [x["inner"]["encoder_linear_removed"] for x in sizes if "inner" in x]
    hidden = [x["hidden"]["encoder_linear_removed"] for x in sizes if "hidden" in x]
    if not inner:
        return "–"
    return pm([100 * x for x in inner]) + " / " + (pm([100 * x for x in hidden]) if hidden else "–")


def removal_summary(p) -> str | None:
    """One line over every gate run with a recorded correction: how often the controller alone came within TOL of
    the request, how often the correction changed gates, and how many of those lost more than 1 dev point to it
    with no recovery kept."""
    recs = [r for c in p.cells if c.is_gates for r in c.records if isinstance(r.get("correction"), dict)]
    recs = [r for r in recs if r["correction"].get("removed_before") is not None and r.get("removed_asked") is not None]
    if not recs:
        return None
    alone = sum(controller_met(r) for r in recs)
    changed = [r["correction"] for r in recs if r["correction"].get("gates_changed")]
    measured = [x for x in changed if "dev_main_before" in x]
    lost = [
        x
        for x in measured
        if x["dev_main_before"] - x["dev_main_after"] > 1.0 and not (x.get("recovery") or {}).get("kept")
    ]
    text = (
        f"Controller alone within {100 * TOL:g} points of the request (before any correction): {alone} of "
        f"{len(recs)} gate runs ({100 * alone / len(recs):.0f}%). The correction changed gates in {len(changed)}"
    )
    if measured:
        text += f"; of the {len(measured)} with dev measured before and after it, {len(lost)} lost more than 1 point"
        text += " with no recovery kept"
    elif changed:
        text += " (dev was not measured before and after it in these records)"
    return text + "."


def correction_table(p) -> str | None:
    """Every gate run whose final correction changed gates: removed before -> after, and val / dev before ->
    after it (-> after the recovery phase, where one ran). None when no correction acted or none was measured."""
    rows = []
    for label, keep in gate_settings(p):
        for t in p.tasks:
            c = p.cell(t, label, keep)
            for r in c.records if c else []:
                x = r.get("correction") or {}
                if not x.get("gates_changed") or "dev_main_before" not in x:
                    continue
                rec = x.get("recovery") or {}

                def arrow(k, x=x, rec=rec):
                    return f"{x[k + '_before']:.1f} → {x[k + '_after']:.1f}" + (
                        f" → {rec[k + '_after']:.1f}" if rec else ""
                    )

                rows.append(
                    md_row(
                        [
                            setting_label(label, keep),
                            t,
                            str(r["config"].get("seed")),
                            f"{100 * x['removed_before']:.1f} → {100 * x['removed_after']:.1f}",
                            f"{x['gates_changed']} ({100 * x.get('changed_fraction', 0):.1f}%)",
                            arrow("val_main"),
                            arrow("dev_main"),
                            str(rec.get("steps", "–")) + (" (not kept: val fell)" if rec.get("kept") is False else ""),
                        ]
                    )
                )
    if not rows:
        return None
    head = [
        "gate setting",
        "task",
        "seed",
        "% removed before → after",
        "gates changed",
        "val before → after (→ after recovery)",
        "dev before → after (→ after recovery)",
        "recovery steps",
    ]
    return "\n".join(md_header(head) + rows)
