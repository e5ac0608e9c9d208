"""What the Hessian study analyses: task examples, the adapted model (presets of item 3 of issue 13), a short
training run (docs/design.md §4, §11).

Presets (`--adapters`), on MiniLM (6 layers, hidden 384, FFN 1536):
    gates-all   gates on all six matrices of every layer (q, k, v, o, up, down)      n = 41,472
    lora-qv     LoRA r = 8, alpha 16 on q and v (the common setting, §2)             n = 73,728
    matched     LoRA r = 1 on the same six matrices as gates-all: n = sum(in + out)  n = 41,472
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from analysis.data import ALIASES, GLUE, glue_dir, read_glue
from analysis.constants import repo_path, study_results
from gatecore import Gate, load_model, setup_method, sparsity_penalty
from gatecore.families import gate_targets, lora_targets
from gatecore.parameters import head_parameters, ids

PRESETS = {"gates-all": ("gates", "gates", 1), "lora-qv": ("lora", "lora", 8), "matched": ("lora", "gates", 1)}
TASKS = [GLUE[k][0] for k in GLUE]   # GLUE folder names: SST-2, CoLA, MRPC, RTE, STS-B, QNLI
FINETUNE_RESULTS = study_results("finetune")
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
    sub = rows.subset(rng.permutation(len(rows))[skip: skip + n])
    return sub.texts, sub.labels, 1 if GLUE[key][-1] is None else len(GLUE[key][-1])


def encode(tok, texts, labels, batch_size: int, max_length: int) -> list[dict]:
    out = []
    for i in range(0, len(texts), batch_size):
        chunk = list(zip(*texts[i: i + batch_size]))
        b = dict(tok(*chunk, padding=True, truncation=True, max_length=max_length, return_tensors="pt"))
        lab = labels[i: i + batch_size]
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


def build(model_name: str, num_labels: int, method: str, targets, lora_r: int, seed: int, preset_kind=None,
          lora_alpha: float = 16, sigma: float = 0.1, reg_sigma: float | None = None):
    """Pretrained model (eager attention) with gates or LoRA on `targets`; adapters + head trainable."""
    torch.manual_seed(seed)
    model, tok = load_model(model_name, num_labels=num_labels, attn_implementation="eager")
    targets = resolve_targets(model, preset_kind, targets)
    if method not in ("gates", "lora"):
        raise ValueError(f"method must be 'gates' or 'lora', got {method!r}")
    # the methods' own setup on the analysed matrices; biases stay frozen (the Hessian is over the adapters)
    setup_method(model, method, bias=False, gate_targets=targets, lora_targets=targets, lora_r=lora_r,
                 lora_alpha=lora_alpha, sigma=sigma, reg_sigma=reg_sigma)
    return model.eval(), tok


def penalty_fn(lam: float, objective: str, target: float | None, reg_sigma: float | None, kurtosis_tau: float | None = None):
    """lam * sparsity_penalty(model, objective, target, reg_sigma): the term training adds (docs/design.md §1)."""
    kw = {} if kurtosis_tau is None else {"kurtosis_tau": kurtosis_tau}
    return lambda model: lam * sparsity_penalty(model, objective, target, reg_sigma=reg_sigma, **kw)


@torch.no_grad()
def penalty_kink(model, spec: dict) -> dict | None:
    """Where each gate vector sits on the 'target' penalty's |mean P(open) - keep|: at the kink (distance 0) the
    penalty has no second derivative, and autograd's (the one-sided one) depends on the side. None for others."""
    if spec.get("objective") != "target" or spec.get("target") is None:
        return None
    keep = 1.0 - spec["target"]
    d = np.array([abs(float(g.prob_open(spec.get("reg_sigma")).mean()) - keep)
                  for g in model.modules() if isinstance(g, Gate)])
    return {"gate_vectors": int(d.size), "keep": keep, "distance_median": float(np.median(d)), "distance_max": float(d.max()),
            "within_1e-3": int((d <= 1e-3).sum()), "within_1e-2": int((d <= 1e-2).sum()),
            "note": "|mean_i P(open) - keep| per gate vector; at 0 the penalty is not twice differentiable"}


def finetune_record(run_id: str, results_dir: Path = FINETUNE_RESULTS) -> tuple[dict, str]:
    """(record, file relative to the repository) of a finetuning run (analysis.finetune) by its run_id."""
    for f in sorted(Path(results_dir).glob("*.jsonl")):
        for line in f.read_text().splitlines():
            if f'"{run_id}"' in line:
                rec = json.loads(line)
                if rec.get("run_id") == run_id:
                    return rec, repo_path(f)
    raise ValueError(f"no record of finetuning run {run_id!r} in {results_dir}/*.jsonl")


def as_trained_penalty(meta: dict | None, results_dir: Path = FINETUNE_RESULTS) -> dict:
    """The sparsity term at the end of training, {lam, objective, target, reg_sigma, kurtosis_tau, source}, from a
    checkpoint's meta (`--penalty as-trained`).

    - meta["penalty"] (what `--train-steps` saves) as it is;
    - a finetuning-runner checkpoint (meta run_id + config, analysis.finetune): lam, objective, reg_sigma and
      kurtosis_tau from the config; the target from the run's record (results/finetune/*.jsonl, by run_id). The
      runner adds lam * ramp * sparsity_penalty(objective, target = 1 - knob) with the sparsity controller's knob
      (gatecore.sparsity_control), which is held fixed over the last steps: at the end ramp = 1 and the knob is the
      record's final_keep_target (for l0 the knob multiplies lam and there is no target).
    """
    meta = meta or {}
    if meta.get("penalty"):
        return dict(meta["penalty"])
    cfg = meta.get("config") or {}
    if not (meta.get("run_id") and cfg.get("objective")):
        raise ValueError("--penalty as-trained needs a checkpoint whose meta records 'penalty' (lam, objective, target, "
                         "reg_sigma) or a finetuning run (run_id + config with objective, lam, keep)")
    rec, source = finetune_record(meta["run_id"], results_dir)
    knob = rec.get("final_keep_target")
    if knob is None:
        raise ValueError(f"finetuning run {meta['run_id']} ({source}) records no final_keep_target: no penalty was trained")
    lam, objective = float(cfg["lam"]), cfg["objective"]
    return dict(lam=lam * knob if objective == "l0" else lam, objective=objective,
                target=None if objective == "l0" else 1.0 - knob, reg_sigma=cfg.get("reg_sigma"),
                kurtosis_tau=cfg.get("kurtosis_tau"),
                source=f"{source}, run {meta['run_id']}: config lam/objective/reg_sigma, target = 1 - final_keep_target")


def train_short(model, loss_fn, batches, steps: int, lr_adapter: float, lr_head: float, penalty=None, progress=True):
    """AdamW on adapters (+ head), the gates with `penalty`; train mode only on the gates (fresh noise)."""
    from tqdm.auto import tqdm
    head = ids(head_parameters(model))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW([{"params": [p for p in params if id(p) not in head], "lr": lr_adapter},
                             {"params": [p for p in params if id(p) in head], "lr": lr_head}], weight_decay=0.0)
    gates = [m for m in model.modules() if isinstance(m, Gate)]
    for g in gates:
        g.train()
    losses = []
    for step in tqdm(range(steps), desc="short training", disable=not progress, leave=False):
        loss = loss_fn(model, batches[step % len(batches)])
        if gates and penalty is not None:
            loss = loss + penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses
