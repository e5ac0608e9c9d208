"""The race's study: the data, the shared pre-fitted head, the start of each method, the runs (grid, then seeds) and
the record written with its provenance."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch
from torch import nn

from analysis.constants import ROOT, repo_path
from analysis.provenance import provenance, write_json
from gatecore.pooling import pooled_logits, pooled_loss
from gatecore.train import lbfgs_minimize

from ..setup import PRESETS, build, encode, read_task
from .batches import digest, eval_batches, make_batches
from .config import RaceConfig, default_out
from .loop import race
from .pick import criterion, pick_lr, summarize
from .report import table


@torch.no_grad()
def pooled_features(model, batches, pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(what the classifier receives, labels) for every example: captured at the head's input."""
    feats = []
    hook = model.classifier.register_forward_hook(lambda m, inp, out: feats.append(inp[0].detach()))
    try:
        model.eval()
        for b in batches:
            pooled_logits(model, {k: v for k, v in b.items() if k != "labels"}, pooling)
    finally:
        hook.remove()
    return torch.cat(feats), torch.cat([b["labels"] for b in batches])


def fit_head(x: torch.Tensor, y: torch.Tensor, num_labels: int, l2: float, iters: int = 200) -> tuple[dict, dict]:
    """A logistic-regression head on fixed features (LBFGS from zeros, deterministic): (state_dict, fit summary)."""
    head = nn.Linear(x.shape[1], num_labels).to(x.dtype)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    lbfgs_minimize(
        head.parameters(),
        lambda: nn.functional.cross_entropy(head(x), y) + 0.5 * l2 * head.weight.pow(2).sum(),
        lr=1,
        max_iter=iters,
        tolerance_grad=1e-9,
        tolerance_change=1e-12,
        history_size=20,
        line_search_fn="strong_wolfe",
    )
    with torch.no_grad():
        logits = head(x)
        summary = {
            "loss": nn.functional.cross_entropy(logits, y).item(),
            "accuracy": (logits.argmax(1) == y).float().mean().item(),
            "l2": l2,
            "examples": len(y),
            "optimizer": f"LBFGS ({iters} iterations max, strong Wolfe) from zeros",
        }
    return {k: v.detach().clone() for k, v in head.state_dict().items()}, summary


class Study:
    """The data, the shared head and the per-seed batches of a RaceConfig; `start(preset, seed)` builds a model."""

    def __init__(self, cfg: RaceConfig):
        self.cfg = cfg
        self.texts, self.labels, self.num_labels = read_task(cfg.task, cfg.train_examples, cfg.data_seed)
        if cfg.eval_examples > len(self.labels):
            raise ValueError(f"eval_examples={cfg.eval_examples} > train_examples={len(self.labels)}")
        self.loss_fn = pooled_loss(cfg.pooling)
        self._batches: dict[int, list[dict]] = {}
        self.head_state, self.head_fit = None, None
        model, self.tok = build(
            cfg.model,
            self.num_labels,
            PRESETS[cfg.adapters[0]][0],
            None,
            PRESETS[cfg.adapters[0]][2],
            cfg.data_seed,
            PRESETS[cfg.adapters[0]][1],
            sigma=cfg.sigma,
        )
        n = cfg.eval_examples
        self.eval_set = eval_batches(self.tok, self.texts[:n], self.labels[:n], cfg.max_length)
        if cfg.head == "frozen":  # the features of the start (adapters are the identity there: gates 1, B = 0)
            x, y = pooled_features(model, encode(self.tok, self.texts, self.labels, 64, cfg.max_length), cfg.pooling)
            self.head_state, self.head_fit = fit_head(x, y, self.num_labels, cfg.head_l2)
        elif cfg.head != "joint":
            raise ValueError(f"head must be 'frozen' or 'joint', got {cfg.head!r}")

    def batches(self, seed: int) -> list[dict]:
        if seed not in self._batches:
            c = self.cfg
            self._batches[seed] = make_batches(self.tok, self.texts, self.labels, c.steps, c.batch, seed, c.max_length)
        return self._batches[seed]

    def start(self, preset: str, seed: int):
        """The model at step 0: pretrained + the seeded head (torch.manual_seed(seed) before loading, so the same for
        every preset) or the shared pre-fitted one, + the preset's adapters at their seeded init."""
        method, kind, r = PRESETS[preset]
        model, _ = build(self.cfg.model, self.num_labels, method, None, r, seed, kind, sigma=self.cfg.sigma)
        if self.head_state is not None:
            model.classifier.load_state_dict(self.head_state)
        return model

    def run(self, preset: str, lr: float, seed: int, phase: str) -> dict:
        model = self.start(preset, seed)
        batches = self.batches(seed)
        res = race(
            model,
            batches,
            self.eval_set,
            self.loss_fn,
            lr=lr,
            head_lr=self.cfg.head_lr if self.cfg.head == "joint" else None,
            warmup=self.cfg.warmup,
            eval_every=self.cfg.eval_every,
            seed=seed,
        )
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return {
            "adapters": preset,
            "method": PRESETS[preset][0],
            "lr": lr,
            "seed": seed,
            "phase": phase,
            "trainable": n,
            "batch_digest": digest(batches),
            **res,
        }


def analyze(cfg: RaceConfig, log=print) -> dict:
    """The lr grids on tune_seed, then the other seeds at each best lr; the record (without provenance)."""
    t0 = time.perf_counter()
    study = Study(cfg)
    log(f"data + head: {time.perf_counter() - t0:.1f}s" + (f"; head fit {study.head_fit}" if study.head_fit else ""))
    runs = []
    plan = sum(len(cfg.lrs(p)) for p in cfg.adapters) + len(cfg.adapters) * len(
        [s for s in cfg.seeds if s != cfg.tune_seed]
    )
    for preset in cfg.adapters:
        for lr in cfg.lrs(preset):
            runs.append(study.run(preset, lr, cfg.tune_seed, "grid"))
            _log_run(log, runs, plan, t0)
    for preset in cfg.adapters:
        best = pick_lr({r["lr"]: criterion(r) for r in runs if r["adapters"] == preset and r["phase"] == "grid"})
        for seed in cfg.seeds:
            if seed != cfg.tune_seed:
                runs.append(study.run(preset, best, seed, "seed"))
                _log_run(log, runs, plan, t0)
    digests = {}
    for r in runs:
        digests.setdefault(r["seed"], set()).add(r["batch_digest"])
    return {
        "setting": {
            "task": cfg.task,
            "model": cfg.model,
            "train_examples": len(study.labels),
            "eval_examples": cfg.eval_examples,
            "num_labels": study.num_labels,
            "eval_tokens": int(sum(b["attention_mask"].sum() for b in study.eval_set)),
            "same_batches_per_seed": all(len(d) == 1 for d in digests.values()),
            "head": cfg.head,
            "head_fit": study.head_fit,
            "objective": "task loss only (cross-entropy; MSE for one output): the gates' sparsity penalty is left out",
            "gates_forward": f"training mode, fresh noise each forward (sigma {cfg.sigma}); "
            "the rest in eval mode (no dropout)",
            "eval_forward": "model.eval(): eval gates clamp(tanh(theta) + 0.5, 0, 1); LoRA as is",
            "optimizer": f"AdamW(betas 0.9, 0.999, weight_decay 0), linear warm-up {cfg.warmup} steps, then constant",
            "lr_criterion": "eval loss at the last step (diverged: worst)",
            "steps_to_threshold": f"first evaluated step at or below the level (resolution {cfg.eval_every} steps); "
            "stays_below: the first from which it stays there to the end",
            "seconds": time.perf_counter() - t0,
        },
        "summary": summarize(cfg, runs),
        "runs": runs,
    }


def _log_run(log, runs, plan, t0):
    r = runs[-1]
    last = r["eval_loss"][-1]
    el = time.perf_counter() - t0
    log(
        f"[{len(runs)}/{plan}] {r['adapters']} lr={r['lr']:g} seed={r['seed']} ({r['phase']}): eval loss "
        f"{r['eval_loss'][0]:.4f} -> {last if last is None else round(last, 4)}"
        f"{' DIVERGED at ' + str(r['diverged_at']) if r['diverged_at'] else ''}, {r['wall_s']:.0f}s; "
        f"elapsed {el / 60:.1f} min, ~{el / len(runs) * (plan - len(runs)) / 60:.1f} min left"
    )


def run(cfg: RaceConfig, log=print) -> Path:
    """analyze + write the record (provenance header with the exact command), its table and its figure."""
    torch.set_num_threads(cfg.threads)
    record = analyze(cfg, log)
    out = Path(cfg.out) if cfg.out else default_out(cfg)
    out = out if out.is_absolute() else ROOT / out
    head = provenance(dataclasses.asdict(cfg), cfg.tune_seed, "cpu")
    path = write_json(out, {**head, **record})
    path.with_suffix(".md").write_text(table(json.loads(path.read_text()), repo_path(path)))
    log(f"wrote {path}, {path.with_suffix('.md').name}")
    return path
