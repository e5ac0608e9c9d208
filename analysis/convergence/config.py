"""The gate-convergence study's typed config, its defaults and its CLI help (docs/design.md §1, §5).

`ConvergenceConfig` is one setting of analysis/convergence/study.py; results files record it as a dict
(`dataclasses.asdict`), under "config" and per sweep group.
"""

from __future__ import annotations

from dataclasses import dataclass

from analysis.convergence.planted import KINDS

LR = {"adam": 0.05, "sgd": 20.0}  # used when --lr / --lora-lr is 0
LORA_LR = {"adam": 0.01, "sgd": 0.5}


@dataclass(frozen=True)
class ConvergenceConfig:
    """One setting of the study (the defaults, visible; HELP says what each is). Recorded as a dict."""

    problem: str = "linear"
    m: int = 32
    n: int = 32
    hidden: int = 32
    samples: int = 256
    rows_off: float = 0.25
    cols_off: float = 0.25
    noise: float = 0.0
    rank: int = 2
    methods: str = "gates,lora"
    seeds: int = 3
    steps: int = 2000
    evals: int = 40
    optimizer: str = "adam"
    lr: float = 0.0
    lora_lr: float = 0.0
    batch: int = 0
    grad: str = "sampled"
    sigma: float = 0.1
    reg_sigma: float = 0.5
    lam: float = 0.1
    objective: str = "l0"
    target: float = -1.0
    init_mean: float = 1.0
    init_std: float = 0.1
    lora_r: int = 8
    lora_alpha: float = 16.0
    draws: int = 128
    polish_iters: int = 100


HELP = dict(
    problem=f"planted problem: {', '.join(KINDS)} (lowrank = the counter-case where LoRA is well specified)",
    m="outputs of the gated matrix",
    n="inputs of the gated matrix",
    hidden="hidden units of the mlp teacher",
    samples="data points N",
    rows_off="planted fraction of closed rows (mlp: hidden units)",
    cols_off="planted fraction of closed columns (input features)",
    noise="label noise std",
    rank="rank of the lowrank target change",
    methods="comma list of gates, lora",
    seeds="seeds 0..S-1 (each a new problem, init and noise)",
    steps="optimizer steps",
    evals="log-spaced steps at which F, grad F, recovery are measured",
    optimizer="adam or sgd",
    lr=f"gate learning rate (0: {LR})",
    lora_lr=f"LoRA learning rate (0: {LORA_LR})",
    batch="minibatch size (0: full batch; the gate noise is the only randomness)",
    grad="sampled: the library's process (fresh gate noise each step); exact: descent on F (mlp: CRN estimate)",
    sigma="forward gate noise scale",
    reg_sigma="scale inside the regulariser's Phi (docs/design.md §1)",
    lam="weight of the sparsity objective",
    objective="sparsity objective: target, l0 or params",
    target="target sparsity for target/params (<0: the planted fraction of closed gates / weights)",
    init_mean="gate theta init mean (mu = tanh(theta))",
    init_std="gate theta init std",
    lora_r="LoRA rank",
    lora_alpha="LoRA alpha",
    draws="Monte Carlo noise draws for F where no closed form",
    polish_iters="L-BFGS iterations used to find F*",
)
