"""Read the finetuning records (results/finetune/*.jsonl) and aggregate them over seeds.

One jsonl file is one protocol (e.g. cpu.jsonl, gpu.jsonl). Inside a protocol, runs that differ only
in their seed form one `Cell`; a cell's `label` names the method and any setting that varies inside
that method (e.g. "gates (no bias)", "gates lam=2"), and gate cells also carry their keep target.
The GLUE table (`glue_table`) and every finetuning figure are built from these cells alone.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path

from analysis.provenance import read_jsonl, warn_if_dirty

TASK_ORDER = ("SST-2", "MRPC", "RTE", "CoLA", "STS-B")  # GLUE tasks first, in this order; others follow
DISPLAY = {"sst2": "SST-2", "mrpc": "MRPC", "rte": "RTE", "cola": "CoLA", "stsb": "STS-B", "sts-b": "STS-B",
           "rotten_tomatoes": "Rotten Tomatoes"}
CLAIM_REMOVED, CLAIM_GAP = 0.30, 1.0  # the goal: >= 30% of gated weights removed, within 1 point of LoRA
METHOD_ORDER = ("head", "bias", "lora", "full", "gates", "gates+lora")
REFERENCE_METHODS = ("lora", "full", "bias", "head")
GATE_METHODS = ("gates", "gates+lora")
# config keys that may tell two settings of one method apart (lr is chosen per run by the search, so it is not one)
LABEL_KEYS = ("objective", "lam", "lam_warmup", "sigma", "reg_sigma", "epochs", "lora_r", "lora_alpha",
              "pooling", "train_examples", "batch_size", "max_len", "model")


def _mean(xs):
    return statistics.fmean(xs) if xs else float("nan")


def _std(xs):
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


@dataclass
class Cell:
    """One (task, label, keep) setting of a protocol, with one entry per seed."""
    task: str
    label: str
    method: str
    keep: float | None
    records: list[dict] = field(default_factory=list)

    def values(self, key) -> list[float]:
        out = []
        for r in self.records:
            v = key(r) if callable(key) else r.get(key)
            if v is not None:
                out.append(float(v))
        return out

    @property
    def seeds(self) -> list:
        return [r["config"].get("seed") for r in self.records]

    @property
    def dev(self) -> list[float]:
        return self.values("dev_main")

    @property
    def removed(self) -> list[float]:
        return self.values("removed_fraction")

    @property
    def trainable(self) -> float:
        return _mean(self.values(lambda r: (r.get("params") or {}).get("trainable")))

    @property
    def speedup(self) -> list[float]:
        """Dense / compressed latency (CPU if measured there, else GPU)."""
        return self.values(lambda r: (r.get("compressed") or {}).get("speedup_cpu",
                                                                      (r.get("compressed") or {}).get("speedup_gpu")))

    @property
    def is_gates(self) -> bool:
        return self.method in GATE_METHODS

    def mean(self, key="dev_main") -> float:
        return _mean(self.values(key))

    def std(self, key="dev_main") -> float:
        return _std(self.values(key))


@dataclass
class Protocol:
    """All records of one results/finetune/<name>.jsonl file, grouped into cells."""
    name: str
    path: Path
    records: list[dict]
    cells: list[Cell]

    @property
    def tasks(self) -> list[str]:
        found = {c.task for c in self.cells}
        return [t for t in TASK_ORDER if t in found] + sorted(found - set(TASK_ORDER))

    @property
    def labels(self) -> list[str]:
        found = {(c.method, c.label) for c in self.cells}
        rank = {m: i for i, m in enumerate(METHOD_ORDER)}
        return [l for _, l in sorted(found, key=lambda ml: (rank.get(ml[0], len(rank)), ml[1]))]

    def cell(self, task, label, keep=None) -> Cell | None:
        for c in self.cells:
            if c.task == task and c.label == label and c.keep == keep:
                return c
        return None

    def keeps(self, label) -> list:
        """Keep targets of one label, decreasing (increasing sparsity); [None] for a method without gates."""
        return sorted({c.keep for c in self.cells if c.label == label}, key=lambda k: -(k if k is not None else 2.0))

    @property
    def glue_tasks(self) -> list[str]:
        return [t for t in self.tasks if t in TASK_ORDER]

    def glue_average(self, label, keep=None) -> Cell | None:
        """Per seed, the mean dev_main over the protocol's GLUE tasks; None unless every one has the cell."""
        cells = [self.cell(t, label, keep) for t in self.glue_tasks]
        if not cells or any(c is None for c in cells):
            return None
        by_seed = [{r["config"].get("seed"): r for r in c.records} for c in cells]
        seeds = set.intersection(*(set(b) for b in by_seed))
        if not seeds:
            return None
        avg = Cell("GLUE avg", label, cells[0].method, keep)
        for s in sorted(seeds, key=str):
            rs = [b[s] for b in by_seed]
            avg.records.append({"config": {"seed": s}, "dev_main": _mean([r["dev_main"] for r in rs]),
                                "removed_fraction": _mean([r.get("removed_fraction") or 0.0 for r in rs]),
                                "params": {"trainable": _mean([(r.get("params") or {}).get("trainable", 0) for r in rs])}})
        return avg


def _varying_keys(records: list[dict]) -> list[str]:
    """LABEL_KEYS that take two or more values on one task (a constant per task, e.g. epochs, is no label)."""
    out = []
    for k in LABEL_KEYS:
        for task in {r["config"].get("task") for r in records}:
            vals = {repr(r["config"].get(k)) for r in records if r["config"].get("task") == task}
            if len(vals) > 1:
                out.append(k)
                break
    return out


def label_of(config: dict, varying: list[str]) -> str:
    method = config.get("method", "?")
    label = method
    if method in GATE_METHODS and config.get("bias") is False:
        label += " (no bias)"
    extra = [f"{k}={config.get(k)}" for k in varying]
    return label + (" " + " ".join(extra) if extra else "")


def group(records: list[dict]) -> list[Cell]:
    cells: dict[tuple, Cell] = {}
    by_method: dict[str, list[dict]] = {}
    for r in records:
        by_method.setdefault(r["config"].get("method", "?"), []).append(r)
    for method, rs in by_method.items():
        varying = _varying_keys(rs)
        for r in rs:
            cfg = r["config"]
            keep = cfg.get("keep") if method in GATE_METHODS else None
            task = str(cfg.get("task"))
            key = (DISPLAY.get(task.lower(), task), label_of(cfg, varying), keep)
            cells.setdefault(key, Cell(key[0], key[1], method, keep)).records.append(r)
    return list(cells.values())


def load_protocols(results_dir) -> list[Protocol]:
    """Every results/finetune/*.jsonl as a Protocol; a rerun record replaces an older one with its run_id."""
    folder = Path(results_dir) / "finetune"
    out = []
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else []:
        by_id, small = {}, 0
        for r in read_jsonl(path):
            if isinstance(r, dict) and isinstance(r.get("config"), dict) and r.get("dev_main") is not None:
                if r.get("small_mode"):
                    small += 1  # CI-sized smoke runs are not results
                    continue
                by_id[r.get("run_id") or len(by_id)] = r
        if small:
            print(f"{path}: left out {small} small-mode (GATECORE_SMALL=1) record(s)")
        if by_id:
            recs = list(by_id.values())
            warn_if_dirty(path, recs)
            out.append(Protocol(path.stem, path, recs, group(recs)))
    return out


def _pm(values: list[float], digits=1) -> str:
    if not values:
        return "–"
    s = f"{_mean(values):.{digits}f}"
    return s + (f" ± {_std(values):.{digits}f}" if len(values) > 1 else "")


def _params(n: float) -> str:
    if n != n:  # nan
        return "–"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else f"{n:.0f}"


def glue_table(p: Protocol) -> str:
    """Markdown: per label (and keep) a row; per task mean ± std over seeds; then GLUE avg, params, removed, speedup."""
    tasks = p.tasks
    head = ["method", "keep", *tasks, "GLUE avg", "trainable params", "% gated removed", "speedup", "seeds"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label in p.labels:
        for keep in p.keeps(label):
            cells = [p.cell(t, label, keep) for t in tasks]
            have = [c for c in cells if c is not None]
            avg = p.glue_average(label, keep)
            row = [label, "–" if keep is None else f"{keep:g}"]
            row += [_pm(c.dev) if c else "–" for c in cells]
            row.append(_pm(avg.dev) if avg else "–")
            row.append(_params(_mean([c.trainable for c in have])))
            removed = [x for c in have for x in c.removed]
            row.append(_pm([100 * x for x in removed]) if have[0].is_gates else "0")
            speed = [x for c in have for x in c.speedup]
            row.append(f"{_mean(speed):.2f}x" if speed else "–")
            row.append(str(max(len(c.records) for c in have)))
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def describe(p: Protocol) -> str:
    """Where the numbers come from: record count, devices, seeds, commands (first few)."""
    devices = sorted({str(r.get("device")) for r in p.records})
    commands = sorted({str(r.get("command")) for r in p.records})
    seeds = sorted({str(r["config"].get("seed")) for r in p.records})
    shown = "\n".join(f"    {c}" for c in commands[:5]) + (f"\n    ... ({len(commands)} commands in all)" if len(commands) > 5 else "")
    return (f"{len(p.records)} runs from `results/finetune/{p.path.name}`; device(s): {', '.join(devices)}; "
            f"seeds: {', '.join(seeds)}. Commands:\n\n{shown}\n")


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
            return (f"[{self.protocol}] no gate setting removed >= {CLAIM_REMOVED:.0%} of the gated weights on the GLUE "
                    f"average (LoRA {self.lora:.1f}, bias {self.bias:.1f}, full {self.full:.1f})")
        return (f"[{self.protocol}] GLUE average (dev, points): LoRA {self.lora:.1f}, full {self.full:.1f}, bias {self.bias:.1f}; "
                f"best gates with >= {CLAIM_REMOVED:.0%} removed: {self.gate_label} keep {self.gate_keep:g} = "
                f"{self.gate_dev:.1f} ± {self.gate_std:.1f} at {100 * self.gate_removed:.0f}% removed -> "
                f"{self.gate_dev - self.lora:+.1f} vs LoRA ({'within' if self.within_gap else 'NOT within'} {CLAIM_GAP:g} point), "
                f"{self.gate_dev - self.bias:+.1f} vs bias ({'beats' if self.beats_bias else 'does NOT beat'} the control)")


def claim_check(p: Protocol) -> ClaimCheck | None:
    """None when the protocol lacks the GLUE averages of lora and bias."""
    refs = {m: p.glue_average(m) for m in ("lora", "bias", "full")}
    if refs["lora"] is None or refs["bias"] is None:
        return None
    out = ClaimCheck(p.name, refs["lora"].mean(), refs["bias"].mean(),
                     refs["full"].mean() if refs["full"] else float("nan"))
    for c in {(c.label, c.keep) for c in p.cells if c.is_gates}:
        avg = p.glue_average(*c)
        if avg is None or avg.mean("removed_fraction") < CLAIM_REMOVED:
            continue
        if out.gate_label is None or avg.mean() > out.gate_dev:
            out.gate_label, out.gate_keep, out.gate_dev = c[0], c[1], avg.mean()
            out.gate_std, out.gate_removed = avg.std(), avg.mean("removed_fraction")
    return out
