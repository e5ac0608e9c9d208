"""What the Hessian study analyses: task examples and the adapted model, with its presets (item 3 of issue 13;
docs/design.md §4, §11). The sparsity term is penalty.py, the short training run train.py.

Presets (`--adapters`), on MiniLM (6 layers, hidden 384, FFN 1536):
    gates-all   gates on all six matrices of every layer (q, k, v, o, up, down)      n = 41,472
    lora-qv     LoRA r = 8, alpha 16 on q and v (the common setting, §2)             n = 73,728
    matched     LoRA r = 1 on the same six matrices as gates-all: n = sum(in + out)  n = 41,472
"""

from __future__ import annotations

import numpy as np
import torch

from analysis.data import ALIASES, GLUE, glue_dir, read_glue
from gatecore import load_model, setup_method
from gatecore.families import gate_targets, lora_targets

PRESETS = {"gates-all": ("gates", "gates", 1), "lora-qv": ("lora", "lora", 8), "matched": ("lora", "gates", 1)}
TASKS = [GLUE[k][0] for k in GLUE]  # GLUE folder names: SST-2, CoLA, MRPC, RTE, STS-B, QNLI
SYNTHETIC_WORDS = "good bad fine awful great poor film plot actor story slow long".split()


def read_task(task: str, n: int, seed: int, skip: int = 0) -> tuple[list[tuple[str, ...]], list, int]:
    """(texts, labels, num_labels): n examples drawn with `seed` from the train split (QNLI: dev, the only split here),
    after leaving out the first `skip` of that draw. 'synthetic': label = 'good'/'great'/'fine' occurs."""
    rng = np.random.default_rng(seed)
    if task == "synthetic":
        texts = [(" ".join(rng.choice(SYNTHETIC_WORDS, 6)),) for _ in range(skip + n)][skip:]
        return texts, [int(any(w in t[0].split() for w in ("good", "great", "fine"))) for t in texts], 2
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected 'synthetic' or a GLUE task in {glue_dir()}: {sorted(TASKS)}")
    key = ALIASES.get(task.lower(), task.lower())
    rows = read_glue(key, "dev" if task == "QNLI" else "train")
    sub = rows.subset(rng.permutation(len(rows))[skip : skip + n])
    return sub.texts, sub.labels, 1 if GLUE[key][-1] is None else len(GLUE[key][-1])


def encode(tok, texts, labels, batch_size: int, max_length: int) -> list[dict]:
    out = []
    for i in range(0, len(texts), batch_size):
        chunk = list(zip(*texts[i : i + batch_size]))
        b = dict(tok(*chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
        lab = labels[i : i + batch_size]
        b["labels"] = torch.tensor(lab, dtype=torch.float32 if isinstance(lab[0], float) else torch.long)
        out.append(b)
    return out


def resolve_targets(model, preset_kind: str | None, targets):
    """'gates' / 'lora': the model family's preset targets (gatecore.families); else the given regexes."""
    if preset_kind == "gates":
        return gate_targets(model)
    if preset_kind == "lora":
        return lora_targets(model)
    return list(targets)


def build(
    model_name: str,
    num_labels: int,
    method: str,
    targets,
    lora_r: int,
    seed: int,
    preset_kind=None,
    lora_alpha: float = 16,
    sigma: float = 0.1,
    reg_sigma: float | None = None,
):
    """Pretrained model (eager attention) with gates or LoRA on `targets`; adapters + head trainable."""
    torch.manual_seed(seed)
    model, tok = load_model(model_name, num_labels=num_labels, attn_implementation="eager")
    targets = resolve_targets(model, preset_kind, targets)
    if method not in ("gates", "lora"):
        raise ValueError(f"method must be 'gates' or 'lora', got {method!r}")
    # the methods' own setup on the analysed matrices; biases stay frozen (the Hessian is over the adapters)
    setup_method(
        model,
        method,
        bias=False,
        gate_targets=targets,
        lora_targets=targets,
        lora_r=lora_r,
        lora_alpha=lora_alpha,
        sigma=sigma,
        reg_sigma=reg_sigma,
    )
    return model.eval(), tok
