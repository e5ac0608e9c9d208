"""Optimization evidence for issue 13, item 1(d): the same optimizer, from the same start, on the same batches: how
many steps do gates and LoRA need to reach a given training loss?

    python -m analysis.hessian.race                       # SST-2, the defaults below (~20 min, one thread)
    python -m analysis.hessian.race --steps 40 --seeds 0  # a quick look

Protocol (RaceConfig's defaults):
- Data: `train_examples` SST-2 train examples drawn with `data_seed` (analysis.hessian.setup.read_task), at most
  `max_length` tokens. The loss that is raced is measured on a fixed evaluation set: the first `eval_examples` of
  those training examples (an optimization race, not generalization), every `eval_every` steps, with a deterministic
  forward (model.eval(): gates at their eval value clamp(tanh(theta) + 0.5, 0, 1); LoRA as it is, no dropout). The
  running training loss (each step's batch, as trained) is recorded too.
- Start: pretrained MiniLM with the preset adapter sets of the Hessian study (setup.PRESETS): `gates-all` (gates on
  all six matrices of every layer, n = 41,472) and `lora-qv` (LoRA r = 8, alpha 16 on q, v, n = 73,728). Both start
  as the pretrained function exactly (every eval gate is 1 at init, B = 0), so both have the same loss at step 0.
- Head: by default a shared task head fitted beforehand and frozen (`head='frozen'`): a logistic regression (LBFGS,
  small L2) on the frozen pretrained encoder's pooled features of the training examples, the same weights for both
  methods and every seed. Why: the question is about the adapters' loss landscape, and the Hessian study holds the
  head fixed too; a jointly trained head gives both methods the same fast, head-driven drop from a random head
  (most of the early loss decrease), which masks the adapters' difference, and would add a third tuned rate.
  `--head joint` trains the seeded head jointly at `head_lr` for both instead.
- Optimizer: AdamW (betas 0.9, 0.999, no weight decay), linear warm-up over `warmup` steps, then constant. The
  objective is the task loss (cross-entropy) only for both methods: the gates' sparsity penalty is left out, so both
  optimize the same objective. The gates train as the method trains them: in training mode, fresh noise
  z = clamp(tanh(theta) + 0.5 + sigma eps, 0, 1) each forward (sigma = 0.1); the rest of the model is in eval mode
  (no dropout) for both, so that noise (and, for LoRA, none) is the only randomness besides the batch order.
- Seeds: the seed sets the batch order (one permutation of the training examples per epoch, the same for both
  methods), the adapters' init (gate thetas, LoRA A) and the gates' noise stream.
- Learning rates: each method's grid on `tune_seed`; the best rate is the one with the lowest eval loss at the last
  step (a diverged run counts as worst); a best rate at the edge of its grid is flagged. Then every seed at that rate.
- Reported: the eval-loss curves (mean and min-max over seeds), steps to each threshold (the first evaluated step at
  or below it; resolution `eval_every`), and the final losses: results/hessian/race_sst2.json (provenance and the
  command), results/hessian/race_sst2.md (table) and figures/hessian_race.png, both redrawn from the json alone by
  `python -m analysis.figures --only hessian-race`.

What it does not separate: steps-to-loss mixes the curvature of the loss with the scale of each parametrization
(tanh of theta vs LoRA's alpha / r and its zero-initialized B), with Adam's per-coordinate normalization (which
undoes much of that scale), and with the gates' noise.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from analysis.cli import add_options, from_args, option
from analysis.constants import FIGURES, ROOT, repo_path, study_results
from analysis.provenance import provenance, warn_if_dirty, write_json
from gatecore import OFFLINE_MODEL, Gate
from gatecore.parameters import head_parameters, ids
from gatecore.pooling import pooled_loss

from .setup import PRESETS, build, encode, read_task

FIGURE = "hessian_race.png"


@dataclass(frozen=True)
class RaceConfig:
    """One race; every field is a flag of the CLI (`--` + name with dashes)."""
    model: str = option(OFFLINE_MODEL, "model name or local folder")
    task: str = option("SST-2", "GLUE task folder name, or 'synthetic'")
    adapters: tuple = option(("gates-all", "lora-qv"), "the raced presets (analysis.hessian.setup.PRESETS)")
    gate_lrs: tuple = option((0.01, 0.03, 0.1, 0.3), "AdamW lr grid of the gate thetas (a pilot at 0.3 rose 0.264 -> 0.377)")
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
    thresholds: tuple = option((0.25, 0.225, 0.2, 0.175), "eval-loss levels for steps-to-threshold (the start is 0.264)")
    pooling: str = option("mean", "sentence representation: mean (what MiniLM was trained with) or cls")
    sigma: float = option(0.1, "gates' forward noise scale")
    threads: int = option(1, "torch CPU threads (one: the machine is shared)")
    out: str = option("", "results JSON (default results/hessian/race_<task>.json)")
    figure: str = option(FIGURE, "figure file name, in figures/ (drawn from the JSON)")

    def lrs(self, preset: str) -> tuple:
        return self.gate_lrs if PRESETS[preset][0] == "gates" else self.lora_lrs


# ---- the pieces ---------------------------------------------------------------------------------------------

def batch_order(n: int, steps: int, batch: int, seed: int) -> list[np.ndarray]:
    """Example indices of each step: a fresh permutation of the n examples per epoch (rng seeded with `seed`)."""
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(n) for _ in range(math.ceil(steps * batch / n))])
    return [order[i * batch: (i + 1) * batch] for i in range(steps)]


def make_batches(tok, texts, labels, steps: int, batch: int, seed: int, max_length: int) -> list[dict]:
    """The `steps` training batches of `seed`: the same for every method (they depend on the data and seed only)."""
    out = []
    for idx in batch_order(len(labels), steps, batch, seed):
        out += encode(tok, [texts[i] for i in idx], [labels[i] for i in idx], batch, max_length)
    return out


def eval_batches(tok, texts, labels, max_length: int, batch: int = 64) -> list[dict]:
    """The evaluation set in batches of similar length (less padding; the mean loss does not depend on the order)."""
    lengths = [len(tok(*t, truncation=True, max_length=max_length)["input_ids"]) for t in texts]
    idx = np.argsort(lengths, kind="stable")
    return encode(tok, [texts[i] for i in idx], [labels[i] for i in idx], batch, max_length)


def digest(batches: list[dict]) -> str:
    """A fingerprint of the batches' token ids and labels, in order (to check that both methods saw the same)."""
    h = hashlib.sha1()
    for b in batches:
        h.update(b["input_ids"].numpy().tobytes())
        h.update(b["labels"].numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def eval_loss(model, batches, loss_fn) -> float:
    """Mean loss over the examples, deterministic forward (model.eval(): eval gates, no dropout)."""
    model.eval()
    tot = sum(loss_fn(model, b).item() * len(b["labels"]) for b in batches)
    return tot / sum(len(b["labels"]) for b in batches)


@torch.no_grad()
def pooled_features(model, batches, pooling: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(what the classifier receives, labels) for every example: captured at the head's input."""
    from gatecore.pooling import pooled_logits
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
    opt = torch.optim.LBFGS(head.parameters(), lr=1, max_iter=iters, tolerance_grad=1e-9, tolerance_change=1e-12,
                            history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.cross_entropy(head(x), y) + 0.5 * l2 * head.weight.pow(2).sum()
        loss.backward()
        return loss
    opt.step(closure)
    with torch.no_grad():
        logits = head(x)
        summary = {"loss": nn.functional.cross_entropy(logits, y).item(), "accuracy": (logits.argmax(1) == y).float().mean().item(),
                   "l2": l2, "examples": len(y), "optimizer": f"LBFGS ({iters} iterations max, strong Wolfe) from zeros"}
    return {k: v.detach().clone() for k, v in head.state_dict().items()}, summary


def gates_train(model) -> None:
    """The method's training forward: gates draw fresh noise, the rest of the model in eval mode (no dropout)."""
    model.eval()
    for m in model.modules():
        if isinstance(m, Gate):
            m.train()


def race(model, batches, eval_set, loss_fn, *, lr: float, head_lr: float | None, warmup: int, eval_every: int,
         seed: int) -> dict:
    """AdamW on the adapters (+ the head when head_lr is not None; otherwise it is frozen) over `batches`, one step
    each; returns the eval-loss curve (steps, loss), the training losses and whether it diverged."""
    head = ids(head_parameters(model))
    for p in head_parameters(model):
        p.requires_grad_(head_lr is not None)
    adapter = [p for p in model.parameters() if p.requires_grad and id(p) not in head]
    groups = [{"params": adapter, "lr": lr}] + ([{"params": head_parameters(model), "lr": head_lr}] if head_lr is not None else [])
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.999), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    torch.manual_seed(seed)   # the gates' noise stream
    steps, losses, train = [0], [eval_loss(model, eval_set, loss_fn)], []
    diverged = None
    t = time.perf_counter()
    for step, b in enumerate(batches, start=1):
        gates_train(model)
        loss = loss_fn(model, b)
        if not torch.isfinite(loss):
            diverged = step
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        train.append(loss.item())
        if step % eval_every == 0 or step == len(batches):
            steps.append(step)
            losses.append(eval_loss(model, eval_set, loss_fn))
            if not math.isfinite(losses[-1]):
                diverged = step
                break
    model.eval()
    return {"steps": steps, "eval_loss": [x if math.isfinite(x) else None for x in losses], "train_loss": train,
            "diverged_at": diverged, "wall_s": time.perf_counter() - t}


def criterion(run: dict) -> float:
    """The lr-selection criterion: the eval loss at the last step; a diverged run is worst (inf)."""
    last = run["eval_loss"][-1]
    return math.inf if run.get("diverged_at") or last is None else last


def pick_lr(crit: dict) -> float:
    """The grid point with the lowest criterion (lr -> value; nan / inf are worst; ties: the smaller lr)."""
    finite = {lr: v for lr, v in crit.items() if v is not None and math.isfinite(v)}
    if not finite:
        raise ValueError(f"every lr of the grid diverged: {crit}")
    return min(sorted(finite), key=lambda lr: finite[lr])


def steps_to(steps, losses, threshold: float) -> int | None:
    """The first evaluated step whose loss is at or below `threshold`; None if never."""
    for s, v in zip(steps, losses):
        if v is not None and v <= threshold:
            return int(s)
    return None


def steps_to_stay(steps, losses, threshold: float) -> int | None:
    """The first evaluated step from which the loss stays at or below `threshold` to the end; None if it ends above.
    (For a noisy curve the first crossing (`steps_to`) can be a dip; this one cannot.)"""
    out = None
    for s, v in zip(steps, losses):
        if v is None or v > threshold:
            out = None
        elif out is None:
            out = int(s)
    return out


def spread(values) -> dict:
    v = np.asarray([x for x in values if x is not None], dtype=float)
    if v.size == 0:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0}
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0, "min": float(v.min()),
            "max": float(v.max()), "n": int(v.size)}


# ---- the study -------------------------------------------------------------------------------------------

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
        model, self.tok = build(cfg.model, self.num_labels, PRESETS[cfg.adapters[0]][0], None, PRESETS[cfg.adapters[0]][2],
                                cfg.data_seed, PRESETS[cfg.adapters[0]][1], sigma=cfg.sigma)
        n = cfg.eval_examples
        self.eval_set = eval_batches(self.tok, self.texts[:n], self.labels[:n], cfg.max_length)
        if cfg.head == "frozen":   # the features of the start (adapters are the identity there: gates 1, B = 0)
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
        res = race(model, batches, self.eval_set, self.loss_fn, lr=lr, head_lr=self.cfg.head_lr if self.cfg.head == "joint" else None,
                   warmup=self.cfg.warmup, eval_every=self.cfg.eval_every, seed=seed)
        n = sum(p.numel() for p in model.parameters() if p.requires_grad)
        return {"adapters": preset, "method": PRESETS[preset][0], "lr": lr, "seed": seed, "phase": phase,
                "trainable": n, "batch_digest": digest(batches), **res}


def summarize(cfg: RaceConfig, runs: list[dict]) -> dict:
    """Per preset: the grid's criteria, the best lr (and whether at the grid's edge), and over the seeds at it the
    steps to each threshold and the final losses."""
    out = {}
    for preset in cfg.adapters:
        grid = {r["lr"]: criterion(r) for r in runs if r["adapters"] == preset and r["phase"] == "grid"}
        best = pick_lr(grid)
        grid_lrs = sorted(cfg.lrs(preset))
        seeds = [r for r in runs if r["adapters"] == preset and r["lr"] == best and r["seed"] in cfg.seeds
                 and (r["phase"] == "seed" or r["seed"] == cfg.tune_seed)]
        seeds = sorted({r["seed"]: r for r in seeds}.values(), key=lambda r: r["seed"])
        thr = {}
        for t in cfg.thresholds:
            hit = [steps_to(r["steps"], r["eval_loss"], t) for r in seeds]
            stay = [steps_to_stay(r["steps"], r["eval_loss"], t) for r in seeds]
            thr[f"{t:g}"] = {"per_seed": hit, "reached": sum(h is not None for h in hit), "of": len(hit), **spread(hit),
                             "stays_below": {"per_seed": stay, "reached": sum(h is not None for h in stay), **spread(stay)}}
        tail = max(1, cfg.steps // 10)
        out[preset] = {"method": PRESETS[preset][0], "grid_criterion": {f"{k:g}": (v if math.isfinite(v) else None) for k, v in grid.items()},
                       "best_lr": best, "best_at_grid_edge": best in (grid_lrs[0], grid_lrs[-1]),
                       "seeds": [r["seed"] for r in seeds], "trainable": seeds[0]["trainable"] if seeds else None,
                       "start_eval_loss": spread([r["eval_loss"][0] for r in seeds]),
                       "final_eval_loss": spread([r["eval_loss"][-1] for r in seeds]),
                       f"final_train_loss_last{tail}": spread([float(np.mean(r["train_loss"][-tail:])) for r in seeds if r["train_loss"]]),
                       "steps_to": thr}
    return out


def analyze(cfg: RaceConfig, log=print) -> dict:
    """The lr grids on tune_seed, then the other seeds at each best lr; the record (without provenance)."""
    t0 = time.perf_counter()
    study = Study(cfg)
    log(f"data + head: {time.perf_counter() - t0:.1f}s" + (f"; head fit {study.head_fit}" if study.head_fit else ""))
    runs = []
    plan = sum(len(cfg.lrs(p)) for p in cfg.adapters) + len(cfg.adapters) * len([s for s in cfg.seeds if s != cfg.tune_seed])
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
    return {"setting": {"task": cfg.task, "model": cfg.model, "train_examples": len(study.labels), "eval_examples": cfg.eval_examples,
                        "num_labels": study.num_labels, "eval_tokens": int(sum(b["attention_mask"].sum() for b in study.eval_set)),
                        "same_batches_per_seed": all(len(d) == 1 for d in digests.values()),
                        "head": cfg.head, "head_fit": study.head_fit,
                        "objective": "task loss only (cross-entropy; MSE for one output): the gates' sparsity penalty is left out",
                        "gates_forward": f"training mode, fresh noise each forward (sigma {cfg.sigma}); the rest in eval mode (no dropout)",
                        "eval_forward": "model.eval(): eval gates clamp(tanh(theta) + 0.5, 0, 1); LoRA as is",
                        "optimizer": f"AdamW(betas 0.9, 0.999, weight_decay 0), linear warm-up {cfg.warmup} steps, then constant",
                        "lr_criterion": "eval loss at the last step (diverged: worst)",
                        "steps_to_threshold": f"first evaluated step at or below the level (resolution {cfg.eval_every} steps); "
                                              "stays_below: the first from which it stays there to the end",
                        "seconds": time.perf_counter() - t0},
            "summary": summarize(cfg, runs), "runs": runs}


def _log_run(log, runs, plan, t0):
    r = runs[-1]
    el = time.perf_counter() - t0
    log(f"[{len(runs)}/{plan}] {r['adapters']} lr={r['lr']:g} seed={r['seed']} ({r['phase']}): eval loss "
        f"{r['eval_loss'][0]:.4f} -> {r['eval_loss'][-1] if r['eval_loss'][-1] is None else round(r['eval_loss'][-1], 4)}"
        f"{' DIVERGED at ' + str(r['diverged_at']) if r['diverged_at'] else ''}, {r['wall_s']:.0f}s; "
        f"elapsed {el / 60:.1f} min, ~{el / len(runs) * (plan - len(runs)) / 60:.1f} min left")


def default_out(cfg: RaceConfig) -> Path:
    return study_results("hessian") / f"race_{cfg.task.lower().replace('-', '')}.json"


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


# ---- table and figure, from the JSON alone -----------------------------------------------------------------

def _cell(x: dict) -> str:
    """'first crossing (k/n); stays below (k/n)' over the seeds."""
    stay = x.get("stays_below")
    out = f"{_pm(x)} ({x['reached']}/{x['of']})"
    return out if stay is None else out + f"; stays: {_pm(stay)} ({stay['reached']}/{x['of']})"


def _pm(s: dict, fmt: str = ".0f") -> str:
    if not s or s.get("mean") is None:
        return "not reached"
    return f"{s['mean']:{fmt}} ± {s['std']:{fmt}}"


def table(rec: dict, source: str = "") -> str:
    """The markdown table of a race record (`source`: the JSON it comes from, as shown)."""
    cfg, summ, st = rec["config"], rec["summary"], rec["setting"]
    thr = list(next(iter(summ.values()))["steps_to"])
    lines = [f"# Steps to a training loss: {' vs '.join(summ)} ({st['task']}, issue 13 item 1(d))", "",
             f"Generated from `{source}` (do not edit; `python -m analysis.figures --only hessian-race`); command: `{rec['command']}`.", "",
             f"Same start (pretrained {cfg['model']}, head {st['head']}), same batches per seed "
             f"({'checked' if st['same_batches_per_seed'] else 'NOT the same'}), {st['optimizer']}, {cfg['steps']} steps of "
             f"{cfg['batch']}; objective: {st['objective']}. Eval loss: {st['eval_examples']} fixed training examples, "
             f"{st['eval_forward']}. Best lr: {st['lr_criterion']}, on seed {cfg['tune_seed']}; then seeds "
             f"{', '.join(map(str, cfg['seeds']))}. Steps to a level: the first evaluated step at or below it (every "
             f"{cfg['eval_every']} steps), mean ± std over the seeds that reached it (reached/seeds); 'stays': the first "
             "step from which the loss stays at or below it to the last step.", "",
             "| adapters | n | best lr | grid (lr: final eval loss) | start | " + " | ".join(f"steps to {t}" for t in thr)
             + " | final eval loss |",
             "|---|---|---|---|---|" + "---|" * len(thr) + "---|"]
    for preset, s in summ.items():
        grid = ", ".join(f"{k}: {'div.' if v is None else f'{v:.3f}'}" for k, v in s["grid_criterion"].items())
        cells = [_cell(s["steps_to"][t]) for t in thr]
        lines.append(f"| {preset} | {s['trainable']:,} | {s['best_lr']:g}{' (grid edge)' if s['best_at_grid_edge'] else ''} | {grid} | "
                     f"{s['start_eval_loss']['mean']:.4f} | " + " | ".join(cells) + f" | {_pm(s['final_eval_loss'], '.4f')} |")
    return "\n".join(lines) + "\n"


def figure(rec: dict, path: Path) -> Path:
    """Eval loss vs step (mean, min-max over seeds shaded, threshold lines), the running training loss, the lr grids."""
    import matplotlib.pyplot as plt
    cfg, summ = rec["config"], rec["summary"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2), gridspec_kw={"width_ratios": [2, 2, 1.2]})
    colors = {"gates": "tab:blue", "lora": "tab:orange"}
    for preset, s in summ.items():
        c = colors.get(s["method"], None)
        runs = [r for r in rec["runs"] if r["adapters"] == preset and r["lr"] == s["best_lr"] and r["seed"] in s["seeds"]
                and (r["phase"] == "seed" or r["seed"] == cfg["tune_seed"])]
        runs = list({r["seed"]: r for r in runs}.values())
        steps = runs[0]["steps"]
        ev = np.array([[np.nan if v is None else v for v in r["eval_loss"]] + [np.nan] * (len(steps) - len(r["eval_loss"])) for r in runs])
        lab = f"{preset} (n={s['trainable']:,}), lr {s['best_lr']:g}, {len(runs)} seeds"
        axes[0].plot(steps, np.nanmean(ev, 0), color=c, lw=2, label=lab)
        axes[0].fill_between(steps, np.nanmin(ev, 0), np.nanmax(ev, 0), color=c, alpha=0.25, lw=0)
        k = max(1, cfg["steps"] // 15)
        tr = [np.convolve(r["train_loss"], np.ones(k) / k, mode="valid") for r in runs if len(r["train_loss"]) >= k]
        m = min(len(x) for x in tr)
        tr = np.array([x[:m] for x in tr])
        xs = np.arange(k, k + m)
        axes[1].plot(xs, tr.mean(0), color=c, lw=1.5, label=f"{preset}, lr {s['best_lr']:g}")
        axes[1].fill_between(xs, tr.min(0), tr.max(0), color=c, alpha=0.2, lw=0)
        g = sorted((float(lr), v) for lr, v in s["grid_criterion"].items())
        axes[2].plot([x for x, _ in g], [np.nan if v is None else v for _, v in g], "o-", color=c, label=preset)
        axes[2].plot([s["best_lr"]], [s["grid_criterion"][f"{s['best_lr']:g}"]], "*", ms=14, color=c)
    for t in cfg["thresholds"]:
        axes[0].axhline(t, color="gray", lw=0.7, ls="--")
        axes[0].text(axes[0].get_xlim()[1], t, f" {t:g}", va="center", fontsize=7, color="gray")
    axes[0].set(xlabel="step", ylabel="eval loss (fixed training examples, eval forward)",
                title="Eval loss at each method's best lr (mean; min-max over seeds)")
    axes[1].set(xlabel="step", ylabel=f"training loss (moving mean of {max(1, cfg['steps'] // 15)} steps)",
                title="Running training loss (as trained: gates with noise)")
    axes[2].set(xscale="log", xlabel="AdamW lr", ylabel="eval loss at the last step",
                title=f"lr grid, seed {cfg['tune_seed']} (star: chosen)")
    for ax in axes:
        ax.legend(fontsize=7)
        ax.title.set_fontsize(9)
    st = rec["setting"]
    fig.suptitle(f"{st['task']}: steps to a training loss; same AdamW, start and batches; task loss only (no sparsity "
                 f"penalty); head {st['head']}", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def make_figures(results_dir, figures_dir, write_table: bool = True) -> list[Path]:
    """`python -m analysis.figures --only hessian-race`: every results/hessian/race_*.json -> its figure (+ its table)."""
    made = []
    for p in sorted(Path(results_dir, "hessian").glob("race_*.json")):
        rec = json.loads(p.read_text())
        warn_if_dirty(p, rec)
        made.append(figure(rec, Path(figures_dir) / rec["config"].get("figure", FIGURE)))
        if write_table:
            p.with_suffix(".md").write_text(table(rec, repo_path(p)))
    if not made:
        print("hessian-race: no results/hessian/race_*.json yet (python -m analysis.hessian.race)")
    return made


# ---- CLI ------------------------------------------------------------------------------------------------

def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m analysis.hessian.race", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    add_options(ap, RaceConfig, items={"gate_lrs": float, "lora_lrs": float, "seeds": int, "thresholds": float},
                choices={"adapters": list(PRESETS), "head": ["frozen", "joint"], "pooling": ["mean", "cls"]})
    return ap


def main(argv=None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    cfg = from_args(RaceConfig, args)
    try:
        path = run(cfg, log=lambda s: print(s, flush=True))
    except (ValueError, FileNotFoundError) as e:
        ap.exit(2, f"{ap.prog}: error: {e}\n")
    import matplotlib
    matplotlib.use("Agg")
    print(f"figure: {figure(json.loads(path.read_text()), FIGURES / cfg.figure)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
