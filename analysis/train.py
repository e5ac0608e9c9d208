"""One finetuning run: build the model for a method, train it, evaluate it.

Methods (DESIGN sections 1-2):
    full        every weight trainable
    lora        LoRA on q, v (r, alpha) + head
    bias        biases of the layers gates would wrap + head (the control for `gates`)
    head        the task head only (linear probe: the floor)
    gates       row/column gates on every attention/FFN matrix (+ their biases if bias=True) + head
    gates+lora  gates around W + BA

Pooling: "mean" averages the encoder's last hidden state over the attention mask and applies the
model's own `classifier` (MiniLM was trained as a mean-pooled sentence encoder); "cls" is the
stock BertForSequenceClassification path through the [CLS] pooler. Either way the model stays a
`*ForSequenceClassification`, so `gatecore.compress` applies to it.

Sparsity (gate methods): loss = task + lam_t * penalty(objective, keep), lam_t ramped linearly from 0
over the first `lam_warmup` fraction of the steps. With `control` on, the penalty's keep target is
nudged every `control_every` steps by the gap between the requested keep and the keep measured on the
eval gates (an integral controller), because a keep met in expectation overshoots in eval gates.
"""
from __future__ import annotations

import math
import random
import resource
import time
import zlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

import gatecore as gc
from gatecore.inject import GATE_PRESETS
from gatecore.tiny import tiny_model

from .data import Split, Task

METHODS = ("full", "lora", "bias", "head", "gates", "gates+lora")
GATE_METHODS = ("gates", "gates+lora")


def build_model(cfg: dict, num_labels: int):
    """(model, tokenizer) with the method's adapters and trainable set; cfg["model"] "tiny-bert" = random tiny."""
    method = cfg["method"]
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    torch.manual_seed(cfg["seed"])
    if cfg["model"].startswith("tiny-"):
        model, tok = tiny_model(cfg["model"][5:], num_labels=num_labels, seed=cfg["seed"]), None
    else:
        model, tok = gc.load_model(cfg["model"], num_labels=num_labels)
    torch.manual_seed(cfg["seed"])  # same adapter init whatever the loading did
    if method in ("lora", "gates+lora"):
        gc.add_lora(model, r=cfg["lora_r"], alpha=cfg["lora_alpha"])
    if method in GATE_METHODS:
        gc.add_gates(model, sigma=cfg["sigma"], reg_sigma=cfg["reg_sigma"])
        gc.mark_trainable(model, gates=True, lora=True, bias="gated" if cfg["bias"] else "none", head=True)
    elif method == "full":
        model.requires_grad_(True)
    else:
        gc.mark_trainable(model, gates=False, lora=method == "lora", bias="none", head=True)
        if method == "bias":
            for name, mod in gc.find_targets(model, GATE_PRESETS[model.config.model_type]).items():
                if mod.bias is not None:
                    mod.bias.requires_grad_(True)
    return model, tok


def pooled_logits(model: nn.Module, batch: dict, pooling: str) -> torch.Tensor:
    if pooling == "cls":
        return model(**batch).logits
    if pooling != "mean":
        raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Linear):
        raise ValueError(f"mean pooling needs a linear `classifier` head (BERT-like); {type(model).__name__} "
                         "has none: use pooling='cls'")
    h = getattr(model, model.base_model_prefix)(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).to(h.dtype)
    pooled = (h * m).sum(1) / m.sum(1).clamp_min(1.0)
    return head(getattr(model, "dropout", nn.Identity())(pooled))


@dataclass
class Encoded:
    ids: list[list[int]]
    labels: list


def encode(tok, split: Split, max_len: int, vocab_size: int = 64) -> Encoded:
    """Token ids per example; without a tokenizer (tiny models) hash words into the tiny vocab."""
    if tok is None:
        ids = [[3 + zlib.crc32(w.encode()) % (vocab_size - 3) for t in texts for w in t.split()][:max_len] or [3]
               for texts in split.texts]
        return Encoded(ids, list(split.labels))
    cols = list(zip(*split.texts))
    enc = tok(*[list(c) for c in cols[:2]], truncation=True, max_length=max_len)
    return Encoded(enc["input_ids"], list(split.labels))


def batches(enc: Encoded, batch_size: int, order, pad_id: int, device):
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        n = max(len(enc.ids[j]) for j in idx)
        ids = torch.full((len(idx), n), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), n), dtype=torch.long)
        for r, j in enumerate(idx):
            ids[r, :len(enc.ids[j])] = torch.tensor(enc.ids[j])
            mask[r, :len(enc.ids[j])] = 1
        yield {"input_ids": ids.to(device), "attention_mask": mask.to(device)}, [enc.labels[j] for j in idx]


def task_loss(logits, labels, num_labels: int):
    if num_labels == 1:
        return F.mse_loss(logits.squeeze(-1).float(), torch.tensor(labels, dtype=torch.float, device=logits.device))
    return F.cross_entropy(logits.float(), torch.tensor(labels, dtype=torch.long, device=logits.device))


@torch.no_grad()
def predict(model, enc: Encoded, pooling: str, num_labels: int, pad_id: int, device, batch_size: int = 64):
    was = model.training
    model.eval()
    order = sorted(range(len(enc.ids)), key=lambda j: len(enc.ids[j]))  # length-sorted: little padding
    preds = [None] * len(order)
    for (batch, _), start in zip(batches(enc, batch_size, order, pad_id, device), range(0, len(order), batch_size)):
        out = pooled_logits(model, batch, pooling).float()
        vals = out.squeeze(-1).tolist() if num_labels == 1 else out.argmax(-1).tolist()
        for j, v in zip(order[start:start + batch_size], vals):
            preds[j] = v
    model.train(was)
    return preds


def evaluate(model, enc: Encoded, task: Task, pooling: str, pad_id: int, device) -> dict:
    return task.score(predict(model, enc, pooling, task.num_labels, pad_id, device), enc.labels)


def measured_keep(model, objective: str) -> float:
    """Kept fraction in the objective's own unit, from eval gates: weights (params) or gate-vector mean."""
    rep = gc.gate_report(model)
    if objective == "params":
        return 1.0 - rep.removed_fraction
    fr = [k / n for l in rep.layers for k, n in ((l.rows_kept, l.out_features), (l.cols_kept, l.in_features))]
    return sum(fr) / len(fr)


@dataclass
class TrainResult:
    curve: list = field(default_factory=list)   # [{"step", "dev_main", "loss"}]
    train_time_s: float = 0.0
    step_time_s: float = 0.0
    steps: int = 0
    final_keep_target: float | None = None      # the controller's last keep target (gate methods)


def train(model, cfg: dict, task: Task, train_enc: Encoded, dev_enc: Encoded | None, pad_id: int, device,
          curve_points: int = 4, progress: bool = True) -> TrainResult:
    """AdamW, linear warm-up (6%) then linear decay; dev evaluated at `curve_points` steps for the curve.

    Three lrs: `lr` for weights/biases/LoRA, `head_lr` for the fresh task head, `gate_lr` for gates (None = lr).
    """
    gated = cfg["method"] in GATE_METHODS
    gate_ids = {id(m.theta) for m in model.modules() if isinstance(m, gc.Gate)}
    head_ids = {id(p) for p in gc.find_head(model)[1].parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if id(p) not in gate_ids | head_ids], "lr": cfg["lr"]},
              {"params": [p for p in params if id(p) in head_ids], "lr": cfg.get("head_lr") or cfg["lr"]},
              {"params": [p for p in params if id(p) in gate_ids], "lr": cfg.get("gate_lr") or cfg["lr"]}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.0)
    per_epoch = math.ceil(len(train_enc.ids) / cfg["batch_size"])
    total = max(1, per_epoch * cfg["epochs"])
    warm = max(1, int(0.06 * total))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (total - s) / (total - warm + 1e-9))))
    at = sorted({round(total * (i + 1) / curve_points) for i in range(curve_points)}) if dev_enc else []
    keep_t = cfg.get("keep")
    rng = random.Random(cfg["seed"])
    res, step, t0, loss_ema = TrainResult(), 0, time.perf_counter(), None
    model.to(device).train()
    bar = tqdm(total=total, desc=f"{cfg['task']}/{cfg['method']} lr={cfg['lr']:g}", disable=not progress, leave=False)
    for _ in range(cfg["epochs"]):
        order = list(range(len(train_enc.ids)))
        rng.shuffle(order)
        for batch, labels in batches(train_enc, cfg["batch_size"], order, pad_id, device):
            loss = task_loss(pooled_logits(model, batch, cfg["pooling"]), labels, task.num_labels)
            if gated and cfg["lam"] > 0:
                ramp = min(1.0, step / (cfg["lam_warmup"] * total)) if cfg["lam_warmup"] > 0 else 1.0
                target = None if cfg["objective"] == "l0" else 1.0 - keep_t
                loss = loss + cfg["lam"] * ramp * gc.sparsity_penalty(model, cfg["objective"], target=target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            loss_ema = loss.item() if loss_ema is None else 0.9 * loss_ema + 0.1 * loss.item()
            if gated and cfg.get("control") and cfg["objective"] != "l0" and step % cfg["control_every"] == 0:
                gap = cfg["keep"] - measured_keep(model, cfg["objective"])
                keep_t = min(0.999, max(0.0, keep_t + cfg["control_gain"] * gap))
            if step in at:
                t_eval = time.perf_counter()
                dev_main = evaluate(model, dev_enc, task, cfg["pooling"], pad_id, device)[task.metric]
                point = {"step": step, "dev_main": dev_main, "loss": loss_ema}
                if gated:
                    point.update(removed_fraction=gc.gate_report(model).removed_fraction, keep_target=keep_t)
                res.curve.append(point)
                t0 += time.perf_counter() - t_eval  # curve evaluations are not training time
            bar.update(1)
            bar.set_postfix(loss=f"{loss_ema:.3f}")
    bar.close()
    res.train_time_s = time.perf_counter() - t0
    res.steps = step
    res.step_time_s = res.train_time_s / max(1, step)
    res.final_keep_target = keep_t if gated else None
    return res


def peak_mem_mb(device) -> float:
    """Peak memory of this process: GPU allocator peak on CUDA, else the resident-set high-water mark."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
