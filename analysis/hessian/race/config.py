"""RaceConfig: one race of analysis.hessian.race, every field a flag of its command line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from analysis.cli import option
from analysis.constants import study_results
from gatecore import OFFLINE_MODEL

from ..setup import PRESETS

FIGURE = "hessian_race.png"


@dataclass(frozen=True)
class RaceConfig:
    """One race; every field is a flag of the CLI (`--` + name with dashes)."""

    model: str = option(OFFLINE_MODEL, "model name or local folder")
    task: str = option("SST-2", "GLUE task folder name, or 'synthetic'")
    adapters: tuple = option(("gates-all", "lora-qv"), "the raced presets (analysis.hessian.setup.PRESETS)")
    gate_lrs: tuple = option(
        (0.01, 0.03, 0.1, 0.3), "AdamW lr grid of the gate thetas (a pilot at 0.3 rose 0.264 -> 0.377)"
    )
    lora_lrs: tuple = option((3e-4, 1e-3, 3e-3, 1e-2), "AdamW lr grid of the LoRA factors")
    head: str = option("frozen", "frozen (a shared pre-fitted head) | joint (the seeded head, trained at head_lr)")
    head_lr: float = option(1e-2, "head='joint': the head's lr, the same for both (the finetuning runner's HEAD_LR)")
    head_l2: float = option(1e-4, "head='frozen': L2 weight of the pre-fit")
    train_examples: int = option(2048, "training examples (train split, drawn with data_seed)")
    eval_examples: int = option(256, "the fixed evaluation set: the first this many of the training examples")
    data_seed: int = option(0, "seed of the training-example draw (fixed across seeds)")
    max_length: int = option(64, "tokens per example (truncation)")
    batch: int = option(16, "examples per step")
    steps: int = option(150, "optimizer steps per run")
    warmup: int = option(10, "linear lr warm-up steps, then constant")
    eval_every: int = option(10, "steps between evaluations (also step 0 and the last step)")
    tune_seed: int = option(0, "seed of the lr grid runs")
    seeds: tuple = option((0, 1, 2), "seeds run at each method's best lr (tune_seed's grid run is reused)")
    thresholds: tuple = option(
        (0.25, 0.225, 0.2, 0.175), "eval-loss levels for steps-to-threshold (the start is 0.264)"
    )
    pooling: str = option("mean", "sentence representation: mean (what MiniLM was trained with) or cls")
    sigma: float = option(0.1, "gates' forward noise scale")
    threads: int = option(1, "torch CPU threads (one: the machine is shared)")
    out: str = option("", "results JSON (default results/hessian/race_<task>.json)")
    figure: str = option(FIGURE, "figure file name, in figures/ (drawn from the JSON)")

    def lrs(self, preset: str) -> tuple:
        return self.gate_lrs if PRESETS[preset][0] == "gates" else self.lora_lrs


def default_out(cfg: RaceConfig) -> Path:
    return study_results("hessian") / f"race_{cfg.task.lower().replace('-', '')}.json"
