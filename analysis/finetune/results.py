"""Read the finetuning records (results/finetune/*.jsonl) and aggregate them over seeds.

One jsonl file is one protocol (e.g. cpu-converged.jsonl, gpu.jsonl). Inside a protocol, runs that differ only
in their seed form one `Cell`; a cell's `label` names the method and any setting that varies inside
that method (e.g. "gates (no bias)", "gates (kurtosis tau=100)", "gates lam=2"), and gate cells also
carry their keep target. The GLUE table (analysis.finetune.tables)
and every finetuning figure are built from these cells alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from analysis.constants import GLUE_TASKS, METHOD_ORDER
from analysis.finetune.stats import mean as _mean
from analysis.finetune.stats import std as _std
from analysis.finetune.tables import KURTOSIS_SUFFIX
from analysis.provenance import read_jsonl, warn_if_dirty
from gatecore.methods import GATE_METHODS

DISPLAY = {
    "sst2": "SST-2",
    "mrpc": "MRPC",
    "rte": "RTE",
    "cola": "CoLA",
    "stsb": "STS-B",
    "sts-b": "STS-B",
    "rotten_tomatoes": "Rotten Tomatoes",
}
# what each known protocol is, shown beside its numbers; known protocols first, in this order
PROTOCOL_NOTES = {
    "cpu-converged": "the converged CPU protocol of issue 9 (full train sets, SST-2 capped; "
    "3 seeds for bias, lora, gates)",
    "convergence-check": "long runs with a dense dev curve (bounded dev subset) on SST-2 and MRPC, 3 seeds, "
    "to size cpu-converged's epochs; gates with and without the kurtosis weighting (issue 16)",
    "levers": "levers on SST-2, seed 0, cpu-converged's settings with the gate lr its seed 0 chose (0.1): gates "
    "removing nothing or 10% (what the removal costs), and the params objective",
    "gpu": "the GPU protocol",
    "cpu-fair": "the fair fight of issue 24: every lr grid extended by the grid rule until its choice is interior, "
    "the gates' bias lr searched, the split-range controller; gates at 30% (3 seeds), at 40% and without biases "
    "(seed 0)",
    "cpu-fair-rc": "cpu-fair with the recentered controller in every gate run (issue 24's verdict): gates at 30% "
    "at cpu-fair's choices, gates+lora searched by the grid rule, the other methods' runs cpu-fair's",
    "cpu-fair-long": "SST-2 and STS-B at 4x cpu-fair's epochs, constant lr after warm-up, at cpu-fair's choices",
    "rte-check": "RTE, seed 0, cpu-fair's rules for LoRA and full finetuning: their cpu-converged choices (at a grid "
    "edge) extended by the grid rule, to decide whether RTE belongs in cpu-fair",
    "base-pilot": "issue 25's pilot on all-mpnet-base-v2 (float32): one seed, one point per method, a dense dev curve, "
    "to choose cpu-base's epochs",
    "cpu-base": "the verdict at base size (issue 25): all-mpnet-base-v2 by cpu-fair-rc's rules, trained under "
    "bfloat16 autocast (evaluation in float32); gates at 30% and 20%, 3 seeds for bias, lora and gates",
    "cpu-base-fp32": "cpu-base's first runs, trained in float32 before it moved to bfloat16 autocast: the same grid "
    "points, the check of what the precision changes",
    "precision-points": "single-point runs of cpu-base (SST-2 gates 30%, seed 0) in the precision whose search did "
    "not choose that point, so that dev is compared at the same point in float32 and bfloat16",
    "levers-base": "levers at base size on cpu-base's gates seed 0 points (lr 1e-3; gate lr 0.03 on SST-2, 0.1 on "
    "CoLA; bfloat16 autocast): gates removing nothing or 10% (what the removal costs), 30% (SST-2: and 20%) over "
    "twice the epochs, 30% with the removal started at half the training (lam warm-up 0.5) or at gate lr 0.01 "
    "(CoLA, below the searched grid); LoRA and bias over twice the epochs (CoLA and SST-2)",
    "control-reset": "STS-B gates at 30% asked, cpu-fair's settings and choice (gate lr 0.1, lr 1e-3), seeds 0-2, "
    "with the controller's reset (lam back to 1 once the removal reaches the request)",
    "control-recenter": "SST-2 gates at 30% asked, cpu-fair's settings and choice (gate lr 0.03, lr 3e-3), seeds "
    "0-2, with the controller's recenter (integral back to 0 once the removal falls to the request under a "
    "reopening push): the measurement behind recenter, against cpu-fair's SST-2 undershoot",
}
# config keys that may tell two settings of one method apart (lr is chosen per run by the search, so it is not one)
LABEL_KEYS = (
    "objective",
    "lam",
    "lam_warmup",
    "sigma",
    "reg_sigma",
    "epochs",
    "lora_r",
    "lora_alpha",
    "pooling",
    "train_examples",
    "batch_size",
    "max_len",
    "model",
    "autocast",
)


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
    def asked(self) -> list[float]:
        """Requested removed fraction per seed: the record's removed_asked, else 1 - keep (older records)."""
        return self.values(lambda r: r.get("removed_asked", None if self.keep is None else 1.0 - self.keep))

    @property
    def kurtosis_tau(self) -> float | None:
        return self.records[0]["config"].get("kurtosis_tau")

    @property
    def trainable(self) -> float:
        return _mean(self.values(lambda r: (r.get("params") or {}).get("trainable")))

    @property
    def speedup(self) -> list[float]:
        """Dense / compressed latency (CPU if measured there, else GPU)."""
        return self.values(
            lambda r: (r.get("compressed") or {}).get("speedup_cpu", (r.get("compressed") or {}).get("speedup_gpu"))
        )

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
    def note(self) -> str:
        """What this protocol is (PROTOCOL_NOTES), or '' for an unknown one."""
        return PROTOCOL_NOTES.get(self.name, "")

    @property
    def tasks(self) -> list[str]:
        found = {c.task for c in self.cells}
        return [t for t in GLUE_TASKS if t in found] + sorted(found - set(GLUE_TASKS))  # GLUE first

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
        return [t for t in self.tasks if t in GLUE_TASKS]

    def glue_average(self, label, keep=None, tasks=None) -> Cell | None:
        """Per seed, the mean dev_main over the protocol's GLUE tasks (or `tasks`); None unless every one has the
        cell."""
        cells = [self.cell(t, label, keep) for t in (tasks or self.glue_tasks)]
        if not cells or any(c is None for c in cells):
            return None
        by_seed = [{r["config"].get("seed"): r for r in c.records} for c in cells]
        seeds = set.intersection(*(set(b) for b in by_seed))
        if not seeds:
            return None
        avg = Cell("GLUE avg", label, cells[0].method, keep)
        for s in sorted(seeds, key=str):
            rs = [b[s] for b in by_seed]
            avg.records.append(
                {
                    "config": {"seed": s},
                    "dev_main": _mean([r["dev_main"] for r in rs]),
                    "removed_fraction": _mean([r.get("removed_fraction") or 0.0 for r in rs]),
                    "removed_asked": _mean([r.get("removed_asked", 1.0 - (keep or 1.0)) for r in rs]),
                    "params": {"trainable": _mean([(r.get("params") or {}).get("trainable", 0) for r in rs])},
                }
            )
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
    if method in GATE_METHODS and config.get("kurtosis_tau") is not None:
        label += KURTOSIS_SUFFIX.format(tau=config["kurtosis_tau"])
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


def _protocol_rank(path: Path) -> tuple:
    known = list(PROTOCOL_NOTES)
    return (known.index(path.stem) if path.stem in known else len(known), path.stem)


def load_protocols(results_dir) -> list[Protocol]:
    """Every results/finetune/*.jsonl as a Protocol (PROTOCOL_NOTES' order, then by name); a rerun record
    replaces an older one with its run_id."""
    folder = Path(results_dir) / "finetune"
    out = []
    for path in sorted(folder.glob("*.jsonl"), key=_protocol_rank) if folder.is_dir() else []:
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
