"""The decoder finetuning table and figure (docs/results.md, `make figures`) from results/decoder/finetune.jsonl:
gates vs LoRA on SmolLM2-135M, SST-2 as prompt -> answer word, beside the zero-shot and majority floors."""

from __future__ import annotations

import statistics
from pathlib import Path

from analysis import doc_blocks
from analysis.constants import study_results
from analysis.decoder.finetune import setting
from analysis.finetune.stats import controller_met
from analysis.plotting import save_figure
from analysis.provenance import read_jsonl, warn_if_dirty

LABELS = {"gates": "gates (all seven)", "lora-qv": "LoRA r=8 (q, v)", "lora-all": "LoRA r=8 (all seven)"}
REFERENCE = "lora-qv"  # the paired differences are against it (the paper's LoRA baseline: q, v)


def _load(results_dir) -> tuple[Path, list[dict], dict | None, dict]:
    """(the results file, its records, the floor record or None, summary of the runs)."""
    path = study_results("decoder", results_dir) / "finetune.jsonl"
    records = read_jsonl(path)
    return path, records, next((r for r in records if r.get("kind") == "floor"), None), summary(records)


def summary(records: list[dict]) -> dict:
    """Per method, among the runs of its latest setting (older settings' runs are superseded): the lr tried on seed 0,
    the chosen one (the other seeds' lr; on seed 0 alone the best on val) and the runs at it by seed."""
    out = {}
    for method in LABELS:
        runs = [r for r in records if r.get("kind") == "run" and r["method"] == method]
        if not runs:
            continue
        runs = [r for r in runs if setting(r["config"], method) == setting(runs[-1]["config"], method)]
        search = [r for r in runs if r["phase"] == "search"]
        seeded = [r for r in runs if r["phase"] == "seeds"]
        chosen = (
            seeded[0]["lr"]
            if seeded
            else max(search, key=lambda r: (controller_met(r), r["val_acc"], -r["val_loss"]))["lr"]
        )
        at = {r["seed"]: r for r in runs if r["lr"] == chosen}
        out[method] = {"tried": sorted({r["lr"] for r in search}), "lr": chosen, "runs": dict(sorted(at.items()))}
    return out


def _mean_sd(xs: list[float]) -> str:
    if len(xs) < 2:
        return f"{100 * xs[0]:.1f}" if xs else "-"
    return f"{100 * statistics.mean(xs):.1f} ± {100 * statistics.stdev(xs):.1f}"


def paired_cell(diffs: list[float]) -> str:
    """Mean ± sd of paired differences in points, then each seed's."""
    pts = [100 * d for d in diffs]
    sd = f" ± {statistics.stdev(pts):.1f}" if len(pts) > 1 else ""
    return f"{statistics.mean(pts):+.1f}{sd} ({' / '.join(f'{p:+.1f}' for p in pts)})"


def doc_block(results_dir) -> str | None:
    """The table of <results_dir>/decoder/finetune.jsonl (None without runs)."""
    path, _, floor, table = _load(results_dir)
    if floor is None or not table:
        return None
    ref = table.get(REFERENCE, {}).get("runs", {})
    head = ["method", "dev acc. by seed", "mean ± sd", f"paired diff. vs {LABELS[REFERENCE]}", "lr (tried on seed 0)"]
    head += ["trainable params", "removed asked / got", "val: last two curve points"]
    rows = [
        ["majority class", "", f"{100 * floor['majority']['dev']:.1f}", "", "", "", "", ""],
        ["zero-shot prompt", "", f"{100 * floor['zero_shot']['dev']['acc']:.1f}", "", "", "", "", ""],
    ]
    for method, s in table.items():
        runs = s["runs"]
        devs = [r["dev_acc"] for r in runs.values()]
        paired = [runs[k]["dev_acc"] - ref[k]["dev_acc"] for k in runs if k in ref]
        diff = "" if method == REFERENCE or not paired else paired_cell(paired)
        tried = ", ".join(f"{x:g}" for x in s["tried"])
        edge = " ‡" if s["lr"] in (s["tried"][0], s["tried"][-1]) else ""
        removed = [
            f"{r['removed_asked']:.0%} / {r['removed_got']:.1%} ({r['correction']['removed_before']:.1%} by training)"
            for r in runs.values()
            if "removed_got" in r
        ]
        curve = [r["val_curve"][-2:] for r in runs.values() if len(r.get("val_curve", ())) >= 2]
        last_two = "; ".join(f"{100 * a['acc']:.1f} → {100 * b['acc']:.1f}" for a, b in curve)
        rows.append(
            [
                LABELS[method],
                " / ".join(f"{100 * d:.1f}" for d in devs),
                _mean_sd(devs),
                diff,
                f"**{s['lr']:g}**{edge} ({tried})",
                f"{next(iter(runs.values()))['trainable_params']:,}",
                ", ".join(sorted(set(removed))) if removed else "-",
                last_two,
            ]
        )
    cfg = floor["config"]
    gates = list(table.get("gates", {}).get("runs", {}).values())
    correction = "; ".join(
        f"seed {r['seed']}: {r['correction']['gates_changed']:,} gates changed, dev "
        f"{100 * r['before_correction']['dev']['acc']:.1f} → {100 * r['dev_acc']:.1f}"
        for r in gates
        if "before_correction" in r
    )
    note = (
        f"Dev: {cfg['dev_examples']} SST-2 dev sentences; {cfg['train_examples']:,} "
        f"training and {cfg['val_examples']} val sentences from SST-2 train; {cfg['steps']} steps of "
        f"{cfg['batch']}; lr chosen with seed 0 (first whether training alone removed what was asked, then val accuracy, then val "
        f"loss; ‡: at an edge of what was tried). "
        f"Paired differences in points, per seed. The final exact correction of the gates: {correction or 'none'}. "
        f"Weights: {floor['weights']}. Each record holds the command that made it (here parallel processes split by "
        "`--methods` and `--seeds`; `python -m analysis.decoder.finetune` alone runs all of it in one process)."
    )
    return f"{doc_blocks.table(head, rows)}\n\n{note} {doc_blocks.source(path, floor, 'analysis.decoder.finetune')}"


def make_figure(results_dir, figures_dir) -> list[Path]:
    """figures/decoder_finetune.png: the val curve of every run at its method's chosen lr, with the floors."""
    import matplotlib.pyplot as plt

    path, records, floor, table = _load(results_dir)
    if floor is None or not table:
        return []
    warn_if_dirty(path, records)
    fig, ax = plt.subplots(figsize=(6.6, 4.2))
    for i, (method, s) in enumerate(table.items()):
        for j, r in enumerate(s["runs"].values()):
            pts = r.get("val_curve", [])
            ax.plot(
                [p["step"] for p in pts],
                [100 * p["acc"] for p in pts],
                "o-",
                color=f"C{i}",
                alpha=0.8,
                label=f"{LABELS[method]}, lr {s['lr']:g}" if j == 0 else None,
            )
    ax.axhline(100 * floor["zero_shot"]["val"]["acc"], color="k", ls="--", lw=0.8, label="zero-shot prompt")
    ax.axhline(100 * floor["majority"]["val"], color="grey", ls=":", lw=0.8, label="majority class")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("val accuracy (%)")
    ax.set_title("SmolLM2-135M (Q4_1-dequantized) on SST-2 as prompt -> answer word, one line per seed", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return [save_figure(fig, Path(figures_dir) / "decoder_finetune.png")]
