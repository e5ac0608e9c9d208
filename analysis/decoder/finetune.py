"""Finetuning SmolLM2-135M on SST-2 as prompt -> answer word: gates vs LoRA (q, v) vs LoRA (all seven projections).

    python -m analysis.decoder.finetune                                   # lr search on seed 0, then seeds 1, 2
    python -m analysis.decoder.finetune --model tiny-llama --steps 2 --train-examples 16 --val-examples 8 \\
        --dev-examples 8 --out /tmp/f.jsonl                               # smoke run

Each example is the prompt PROMPT (no system prompt) ending where the assistant's answer starts; the answer is one
label word (LABEL_WORDS). Loss: cross-entropy of the answer token over the whole vocabulary at the last prompt
position; prediction: the larger of the two label words' logits there (accuracy). Floors, on the same val and dev
examples: zero-shot (the pretrained model, same prompt) and the majority class.

Methods (the LM head / tied embedding is never trained): `gates` on the seven projections of every layer, gates
alone (LLaMA has no biases), with the sparsity penalty and controller steering the removed fraction to
`--removed` (asked vs got recorded; val and dev measured before and after the final exact correction); `lora-qv`
r = 8 on q, v; `lora-all` r = 8 on all seven. Every run records its train loss per step and a val curve
(`--eval-every`), to show whether it has flattened.
Learning rates: per method a grid searched with seed 0 by the grid rule of every study
(analysis/gridsearch.py: a best point at an edge extends the grid by a factor 3 in that direction, until it is interior
or at a bound; every point tried is recorded) and the fair fight's score (a gate lr counts only if training removed
what was asked, then val accuracy, then val loss); the other seeds run at the chosen lr. The gates' controller is
the fair fight's (objective `target`, split range on). Resumable: a rerun skips the recorded runs of the same setting.
Writes results/decoder/finetune.jsonl. The weights are Q4_1-dequantized (analysis/decoder/models.py).
"""

from __future__ import annotations

import argparse
import copy
import random
import time
from dataclasses import dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F

import gatecore
from analysis.cli import add_options, from_args, option
from analysis.constants import study_results
from analysis.data import read_glue
from analysis.decoder.models import QUANT_NOTE, TINY, load
from analysis.finetune.stats import controller_met
from analysis.gridsearch import coordinate_search
from analysis.provenance import append_jsonl, provenance, read_jsonl
from gatecore.families import gate_targets
from gatecore.methods import warmup_linear_schedule
from gatecore.sparsity_control import LAM_GAIN, SparsityController, correct_removed, removed_got
from gatecore.train import Objective, train_loop

PROMPT = (
    "<|im_start|>user\nIs the sentiment of this movie review positive or negative? Answer with one word.\n"
    "Review: {text}<|im_end|>\n<|im_start|>assistant\n"
)
LABEL_WORDS = ("Negative", "Positive")  # SST-2 labels 0, 1; an assistant answer starts capitalised
METHODS = ("gates", "lora-qv", "lora-all")
LR_GRIDS = {"gates": (0.03, 0.1, 0.3), "lora-qv": (3e-4, 1e-3, 3e-3), "lora-all": (3e-4, 1e-3, 3e-3)}
LR_BOUNDS = {"gates": (1e-3, 3.0), "lora-qv": (1e-5, 0.1), "lora-all": (1e-5, 0.1)}


@dataclass(frozen=True)
class FinetuneConfig:
    model: str | None = option(
        None, "model name or folder; None: the offline SmolLM2-135M-Instruct; tiny-llama: smoke run"
    )
    methods: tuple = option(METHODS, "methods")
    seeds: tuple = option((0, 1, 2), "seeds; the first one searches the learning rates")
    train_examples: int = option(1024, "training examples sampled from SST-2 train")
    val_examples: int = option(200, "val examples (from SST-2 train, disjoint from the training ones): lr selection")
    dev_examples: int = option(872, "dev examples (a fixed-seed subset of SST-2 dev; 872 = all): reported")
    steps: int = option(128, "optimizer steps")
    batch: int = option(8, "examples per step")
    eval_every: int = option(32, "steps between val evaluations during training (the val curve); 0: only at the end")
    removed: float = option(0.1, "gates: fraction of the gated weights removed, asked")
    lam: float = option(1.0, "gates: weight of the sparsity penalty")
    lam_warmup: float = option(0.2, "gates: fraction of the steps over which lam ramps up")
    objective: str = option("target", "gates: sparsity objective (gatecore.sparsity_penalty), as in the fair fight")
    lam_gain: float = option(
        LAM_GAIN,
        "gates: the controller's split range (raises lam where the knob alone cannot reach the request); 0: off",
    )
    lora_r: int = option(8, "LoRA rank")
    lora_alpha: float = option(16.0, "LoRA alpha")
    eval_batch: int = option(16, "examples per evaluation batch")
    threads: int = option(1, "torch CPU threads")
    out: str = option(str(study_results("decoder") / "finetune.jsonl"), "results file (JSONL)")


def examples(cfg: FinetuneConfig) -> dict[str, list[tuple[str, int]]]:
    """train / val from SST-2 train (disjoint, split seed 0), dev: a seed-0 subset of SST-2 dev."""
    train, dev = read_glue("sst2", "train"), read_glue("sst2", "dev")
    order = random.Random(0).sample(range(len(train)), cfg.val_examples + cfg.train_examples)

    def pick(split, idx):
        return [(split.texts[i][0], int(split.labels[i])) for i in idx]

    return {
        "val": pick(train, order[: cfg.val_examples]),
        "train": pick(train, order[cfg.val_examples :]),
        "dev": pick(dev, sorted(random.Random(0).sample(range(len(dev)), min(cfg.dev_examples, len(dev))))),
    }


def encode(tok, batch: list[tuple[str, int]], pad_id: int) -> dict:
    """Left-padded prompt ids (the answer position is the last one) and the labels."""
    seqs = [tok.encode(PROMPT.format(text=t), add_special_tokens=False) for t, _ in batch]
    n = max(map(len, seqs))
    ids = torch.tensor([[pad_id] * (n - len(s)) + s for s in seqs])
    mask = torch.tensor([[0] * (n - len(s)) + [1] * len(s) for s in seqs])
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.tensor([y for _, y in batch])}


def answer_logits(model, enc: dict) -> torch.Tensor:
    return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], logits_to_keep=1).logits[:, -1]


@torch.no_grad()
def evaluate(model, tok, data, label_ids: torch.Tensor, pad_id: int, batch: int) -> dict:
    """{"acc": two-word accuracy, "loss": mean answer-token cross-entropy over the vocabulary}."""
    model.eval()
    right, loss = 0, 0.0
    for i in range(0, len(data), batch):
        enc = encode(tok, data[i : i + batch], pad_id)
        logits = answer_logits(model, enc).float()
        right += int((logits[:, label_ids].argmax(-1) == enc["labels"]).sum())
        loss += F.cross_entropy(logits, label_ids[enc["labels"]], reduction="sum").item()
    return {"acc": right / len(data), "loss": loss / len(data)}


def setup(model, method: str, cfg: FinetuneConfig) -> list[dict]:
    """Adapters of `method` on `model` (in place); AdamW parameter groups."""
    if method == "gates":
        gatecore.add_gates(model)
        gatecore.mark_trainable(model, gates=True, lora=False, bias="none", head=False)
    else:
        targets = None if method == "lora-qv" else gate_targets(model)
        gatecore.add_lora(model, targets=targets, r=cfg.lora_r, alpha=cfg.lora_alpha)
        gatecore.mark_trainable(model, gates=False, lora=True, bias="none", head=False)
    return [{"params": [p for p in model.parameters() if p.requires_grad]}]


def train_run(base, tok, data, label_ids, pad_id, method: str, lr: float, seed: int, cfg: FinetuneConfig) -> dict:
    torch.manual_seed(seed)
    model = copy.deepcopy(base)
    groups = setup(model, method, cfg)
    trainable = sum(p.numel() for g in groups for p in g["params"])
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)
    sched = warmup_linear_schedule(opt, cfg.steps)
    ctrl = None
    if method == "gates":
        ctrl = SparsityController(cfg.objective, cfg.removed, start=cfg.lam_warmup, lam_gain=cfg.lam_gain)
    objective = Objective(cfg.lam, cfg.objective, lam_warmup=cfg.lam_warmup) if ctrl is not None else None
    rng, answer = random.Random(seed), label_ids
    curve, val_curve, t0 = [], [], time.perf_counter()
    model.train()

    def val_point(step: int) -> dict:
        point = {"step": step, **evaluate(model, tok, data["val"], label_ids, pad_id, cfg.eval_batch)}
        return point | ({"removed": removed_got(model)} if ctrl is not None else {})

    def after(out):
        if ctrl is not None:
            gatecore.check_finite_gates(model)
            ctrl.update(out.step, cfg.steps, removed_got(model))
        curve.append(round(out.task.item(), 4))
        if cfg.eval_every and out.step % cfg.eval_every == 0 and out.step < cfg.steps:
            val_curve.append(val_point(out.step))  # no_grad, eval mode; draws no random numbers
            model.train()

    train_loop(
        model,
        (encode(tok, rng.sample(data["train"], cfg.batch), pad_id) for _ in range(cfg.steps)),
        lambda m, enc: F.cross_entropy(answer_logits(m, enc).float(), answer[enc["labels"]]),
        opt,
        scheduler=sched,
        objective=objective,
        controller=ctrl,
        control=False,
        total=cfg.steps,
        after=after,
        label=f"{method} lr={lr:g} seed={seed}",
    )
    rec = {"train_loss": curve, "train_seconds": time.perf_counter() - t0, "trainable_params": trainable}

    def measure() -> dict:
        return {s: evaluate(model, tok, data[s], label_ids, pad_id, cfg.eval_batch) for s in ("val", "dev")}

    scores = measure()
    if ctrl is not None:  # the correction closes or opens gates without retraining: measured before and after
        rec["correction"] = correct_removed(model, cfg.removed)
        rec["removed_asked"], rec["removed_got"] = cfg.removed, removed_got(model)
        rec["before_correction"] = scores
        if rec["correction"]["gates_changed"]:
            scores = measure()
    for split, ev in scores.items():
        rec[f"{split}_acc"], rec[f"{split}_loss"] = ev["acc"], ev["loss"]
    last = {"step": cfg.steps, **scores["val"]} | ({"removed": rec["removed_got"]} if ctrl is not None else {})
    rec["val_curve"] = val_curve + [last]
    return rec


NOT_TRAINING = ("methods", "seeds", "threads", "out", "eval_batch", "eval_every")  # no effect on a run's numbers
ONLY = {"gates": ("removed", "lam", "lam_warmup", "objective", "lam_gain"), "lora": ("lora_r", "lora_alpha")}
DATA = ("model", "train_examples", "val_examples", "dev_examples")


def setting(config: dict, method: str) -> dict:
    """The config fields a run of `method` depends on: a recorded run is reused only when they all match."""
    other = ONLY["lora" if method == "gates" else "gates"]
    return {k: v for k, v in config.items() if k not in NOT_TRAINING + other}


def run(cfg: FinetuneConfig) -> Path:
    torch.set_num_threads(cfg.threads)
    model, tok = load(cfg.model)
    pad_id = model.config.pad_token_id if model.config.pad_token_id is not None else 0
    label_ids = torch.tensor([tok.encode(w, add_special_tokens=False)[0] for w in LABEL_WORDS])
    data = examples(cfg)
    config = {f.name: list(v) if isinstance(v := getattr(cfg, f.name), tuple) else v for f in fields(cfg)}
    head = {
        "weights": QUANT_NOTE if cfg.model != TINY else "tiny random",
        "prompt": PROMPT,
        "label_words": list(LABEL_WORDS),
    }
    done = read_jsonl(cfg.out)
    if not any(r["kind"] == "floor" and all(r["config"][k] == config[k] for k in DATA) for r in done):
        majority = max((0, 1), key=lambda y: sum(l == y for _, l in data["train"]))
        append_jsonl(
            cfg.out,
            {
                **provenance(config),
                **head,
                "kind": "floor",
                "zero_shot": {
                    s: evaluate(model, tok, data[s], label_ids, pad_id, cfg.eval_batch) for s in ("val", "dev")
                },
                "majority": {s: sum(l == majority for _, l in data[s]) / len(data[s]) for s in ("val", "dev")},
            },
        )

    def key(r):
        return r["method"], r["seed"], r["lr"]

    runs = {
        key(r): r
        for r in read_jsonl(cfg.out)
        if r["kind"] == "run" and setting(r["config"], r["method"]) == setting(config, r["method"])
    }

    def one(method, seed, lr, phase):
        if (method, seed, lr) not in runs:
            rec = train_run(model, tok, data, label_ids, pad_id, method, lr, seed, cfg)
            runs[(method, seed, lr)] = rec = {
                **provenance(config, seed),
                **head,
                "kind": "run",
                "phase": phase,
                "method": method,
                "seed": seed,
                "lr": lr,
                **rec,
            }
            append_jsonl(cfg.out, rec)
            print(
                f"{method:>9} seed {seed} lr {lr:.2g}: val {rec['val_acc']:.3f} dev {rec['dev_acc']:.3f}"
                + (f" removed {rec['removed_got']:.3f}" if "removed_got" in rec else ""),
                flush=True,
            )
        return runs[(method, seed, lr)]

    # the grid rule of every study (analysis/gridsearch.py); the fair fight's score: a gate lr counts only if training
    # removed what was asked (no post-hoc cliff), then val accuracy, then val loss
    for method in cfg.methods:

        def score(point, method=method):
            r = one(method, cfg.seeds[0], point["lr"], "search")
            return controller_met(r), r["val_acc"], -r["val_loss"]

        best = coordinate_search({"lr": list(LR_GRIDS[method])}, score, bounds={"lr": LR_BOUNDS[method]}).best["lr"]
        for seed in cfg.seeds[1:]:
            one(method, seed, best, "seeds")
    return Path(cfg.out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m analysis.decoder.finetune",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_options(ap, FinetuneConfig, choices={"methods": list(METHODS)}, items={"seeds": int})
    cfg = from_args(FinetuneConfig, ap.parse_args(argv))
    for name in ("train_examples", "val_examples", "dev_examples", "steps", "batch", "lora_r", "eval_batch", "threads"):
        if getattr(cfg, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(cfg, name)}")
    if cfg.eval_every < 0:
        ap.error(f"--eval-every must be >= 0, got {cfg.eval_every}")
    if cfg.objective not in ("params", "target"):
        ap.error(f"--objective must be params or target, got {cfg.objective!r}")
    if cfg.lam_gain < 0:
        ap.error(f"--lam-gain must be >= 0, got {cfg.lam_gain}")
    if not 0 < cfg.removed < 1:
        ap.error(f"--removed must be in (0, 1), got {cfg.removed}")
    if cfg.batch > cfg.train_examples:
        ap.error(f"--batch {cfg.batch} is larger than --train-examples {cfg.train_examples}")
    run(cfg)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
