"""docs/results.md's tables of the two bench files whose writers are long modules (latency.py, refusals.py):

    profile_block(results)    where a CPU forward spends its time (results/bench/latency_*.json run with --profile)
    refusals_block(results)   how long the command line takes to refuse bad input (results/bench/cli_refusals.json)

Each returns None when its file is missing, so `make figures` keeps the part as it was (analysis/doc_blocks.py).
"""

from __future__ import annotations

import json

from analysis import doc_blocks
from analysis.constants import study_results
from analysis.provenance import read_record

MODELS = ("dense", "gated", "compressed")


def profile_block(results_dir) -> str | None:
    """Per profiled run and batch: each op's self time (ms per forward, torch.profiler) in the dense, gated and
    compressed model, and compressed / dense. An op outside a model's recorded top ops shows '–'."""
    files = sorted(study_results("bench", results_dir).glob("latency_*.json"))
    files = [f for f in files if json.loads(f.read_text())["config"].get("profile")]
    parts = []
    for path in files:
        rec = read_record(path)
        for run in rec["runs"]:
            for t in run["timings"]:
                prof = t["profile_ms"]
                models = [m for m in MODELS if m in prof]
                ops = {op for m in models for op in prof[m] if op != "total"}
                ops = sorted(ops, key=lambda op: ([-prof[m].get(op, 0) for m in models], op))  # dense's order first
                rows = [
                    [f"`{op}`"]
                    + [f"{prof[m][op]:.2f}" if op in prof[m] else "–" for m in models]
                    + [
                        f"{prof['compressed'][op] / prof['dense'][op]:.2f}x"
                        if op in prof["compressed"] and op in prof["dense"]
                        else ""
                    ]
                    for op in ops + ["total"]
                ]
                rows[-1][0] = "all ops"
                head = ["op (self time, ms per forward)"] + models + ["compressed / dense"]
                title = (
                    f"{run['size']['encoder_linear_removed']:.1%} of the encoder-linear weights removed, {t['device']}, "
                    f"batch {t['batch']} x {t['seq']}: median latency "
                    + ", ".join(f"{m} {t[m]['median_ms']:.1f} ms" for m in models)
                    + f" (speedup {t['speedup_compressed']:.2f}x)."
                )
                parts.append(f"{title}\n\n{doc_blocks.table(head, rows)}")
        note = f"{rec['threads']} thread(s). {doc_blocks.source(path, rec, 'analysis.bench')}"
        parts.append(note)
    return "\n\n".join(parts) or None


def refusals_block(results_dir) -> str | None:
    """Per bad-input case: median and worst wall seconds of the refusal, and the median over `--help`'s."""
    path = study_results("bench", results_dir) / "cli_refusals.json"
    rec = read_record(path)
    if rec is None:
        return None
    rows = [
        [name, f"{c['median_s']:.2f}", f"{c['max_s']:.2f}", f"{c['ratio_to_baseline']:.2f}x"]
        for name, c in rec["cases"].items()
    ]
    head = ["case", "median s", "worst s", "median / `--help`'s"]
    note = (
        f"{rec['config']['repeats']} interleaved rounds, each case a fresh `python -m analysis.finetune` on "
        f"{rec['cpu_count']} cores; worst refusal {rec['worst_refusal_s']:.2f} s."
    )
    return f"{doc_blocks.table(head, rows)}\n\n{note} {doc_blocks.source(path, rec, 'analysis.bench.refusals')}"
