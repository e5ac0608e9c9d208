"""The gate-convergence study's typed config: its defaults and their CLI help (docs/design.md §1, §5).

`ConvergenceConfig` is one setting of analysis/convergence/study.py; results files record it as a dict
(`dataclasses.asdict`), under "config" and per sweep group.
"""

from __future__ import annotations

from dataclasses import dataclass

from analysis.cli import option
from analysis.convergence.planted import KINDS

LR = {"adam": 0.05, "sgd": 20.0}  # used when --lr / --lora-lr is 0
LORA_LR = {"adam": 0.01, "sgd": 0.5}


@dataclass(frozen=True)
class ConvergenceConfig:
    """One setting of the study (the defaults, visible, each with its CLI help). Recorded as a dict."""

    problem: str = option(
        "linear", f"planted problem: {', '.join(KINDS)} (lowrank = the counter-case where LoRA is well specified)"
    )
    m: int = option(32, "outputs of the gated matrix")
    n: int = option(32, "inputs of the gated matrix")
    hidden: int = option(32, "hidden units of the mlp teacher")
    samples: int = option(256, "data points N")
    rows_off: float = option(0.25, "planted fraction of closed rows (mlp: hidden units)")
    cols_off: float = option(0.25, "planted fraction of closed columns (input features)")
    noise: float = option(0.0, "label noise std")
    rank: int = option(2, "rank of the lowrank target change")
    methods: str = option("gates,lora", "comma list of gates, lora")
    seeds: int = option(3, "seeds 0..S-1 (each a new problem, init and noise)")
    steps: int = option(2000, "optimizer steps")
    evals: int = option(40, "log-spaced steps at which F, grad F, recovery are measured")
    optimizer: str = option("adam", "adam or sgd")
    lr: float = option(0.0, f"gate learning rate (0: {LR})")
    lora_lr: float = option(0.0, f"LoRA learning rate (0: {LORA_LR})")
    batch: int = option(0, "minibatch size (0: full batch; the gate noise is the only randomness)")
    grad: str = option(
        "sampled",
        "sampled: the library's process (fresh gate noise each step); exact: descent on F (mlp: CRN estimate)",
    )
    sigma: float = option(0.1, "forward gate noise scale")
    reg_sigma: float = option(0.5, "scale inside the regulariser's Phi (docs/design.md §1)")
    lam: float = option(0.1, "weight of the sparsity objective")
    objective: str = option("l0", "sparsity objective: target, l0 or params")
    target: float = option(
        -1.0, "target sparsity for target/params (<0: the planted fraction of closed gates / weights)"
    )
    init_mean: float = option(1.0, "gate theta init mean (mu = tanh(theta))")
    init_std: float = option(0.1, "gate theta init std")
    lora_r: int = option(8, "LoRA rank")
    lora_alpha: float = option(16.0, "LoRA alpha")
    draws: int = option(128, "Monte Carlo noise draws for F where no closed form")
    polish_iters: int = option(100, "L-BFGS iterations used to find F*")
