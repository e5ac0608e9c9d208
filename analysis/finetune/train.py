"""One finetuning run: build the model for a method, train it, evaluate it.

Methods (docs/design.md §1-2):
    full        every weight trainable
    lora        LoRA on q, v (r, alpha) + head
    bias        biases of the layers gates would wrap + head (the control for `gates`)
    head        the task head only (linear probe: the floor)
    gates       row/column gates on every attention/FFN matrix (+ their biases if bias=True) + head
    gates+lora  gates around W + BA

Pooling (gatecore.pooling): "mean" averages the encoder's last hidden state over the attention mask and
applies the model's own `classifier` (MiniLM was trained as a mean-pooled sentence encoder); "cls" is the
stock BertForSequenceClassification path through the [CLS] pooler. Either way the model stays a
`*ForSequenceClassification`, so `gatecore.compress` applies to it.

Sparsity (gate methods): loss = task + lam_t * penalty(objective, knob), lam_t ramped linearly from 0
over the first `lam_warmup` fraction of the steps. The request is `keep`, the kept fraction of the gated
weights (removed_asked = 1 - keep, whatever the objective); with `control` on, a PI controller moves the
penalty's knob (and, with `control_lam_gain`, lam beyond the knob's window) from the measured eval-gate
removed fraction and a final exact correction brings it within 2 points of the request
(gatecore/sparsity_control.py says how). The record says what the correction changed and what val and dev
were just before and after it; with `recovery` set, a correction that changed more than
`recovery_min_changed` of the gates is followed by `recovery` x steps of training with the gate pattern
frozen (eval gates, no gate gradient; biases, LoRA and head train), measured again after, and kept only if
val does not drop (the record says which; what is reported is the model as kept).

Schedule: AdamW, linear warm-up over 6% of the steps, then linear decay to 0 ("linear", the default) or the
peak lr to the end ("constant", the paper's GLUE schedule shape). With `autocast` (e.g. "bfloat16") the
training forward passes, the recovery's included, run under torch.autocast (gatecore.train); every evaluation
(curve, val, dev, the correction's before/after) stays float32.

Batches: length-bucketed when the spec says `bucketed` (analysis/finetune/batching.py), else random. The dev curve
is measured on a fixed-seed subset of `curve_dev_examples` dev examples (None: all of dev).

Resuming: with a `partial` path, the training loop saves its whole state there every `partial_every_s` seconds
(analysis/finetune/partial.py) and a later call with the same cfg continues from it, to the same result as an
uninterrupted run; the file is deleted when the loop ends (before the correction and recovery, which are short).
"""

from __future__ import annotations

import itertools
import math
import random
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

import gatecore
from analysis.data import Task
from analysis.finetune import partial as partial_ckpt
from analysis.finetune.batching import epoch_batches
from analysis.finetune.encoding import Encoded, collate, evaluate, subset, task_loss_fn
from gatecore.accounting import gated_layers
from gatecore.methods import GATE_METHODS, METHODS, SCHEDULES, param_groups, setup_method, warmup_linear_schedule
from gatecore.sparsity_control import SparsityController, correct_removed, removed_asked, removed_got
from gatecore.tiny import tiny_model
from gatecore.train import AUTOCAST_DTYPES, Objective, train_loop


def train_seed(cfg: dict) -> int:
    """The seed a point trains from: its own, or a restart's (`train_seed`, analysis/finetune/runner.py), which
    keeps the nominal seed that pairs it with the other methods."""
    return cfg.get("train_seed", cfg["seed"])


def build_model(cfg: dict, num_labels: int):
    """(model, tokenizer) with the method's adapters and trainable set (gatecore.setup_method);
    cfg["model"] "tiny-bert" = random tiny."""
    method = cfg["method"]
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    torch.manual_seed(train_seed(cfg))
    if cfg["model"].startswith("tiny-"):
        model, tok = tiny_model(cfg["model"][5:], num_labels=num_labels, seed=train_seed(cfg)), None
    else:
        model, tok = gatecore.load_model(cfg["model"], num_labels=num_labels)
    torch.manual_seed(train_seed(cfg))  # same adapter init whatever the loading did
    opts = {k: cfg[k] for k in ("lora_r", "lora_alpha", "sigma", "reg_sigma", "bias") if k in cfg}
    setup_method(model, method, **opts)
    if method in GATE_METHODS and cfg.get("kurtosis_tau") is not None:  # the weighted penalty reads input means
        gatecore.track_input_means(model)
    return model, tok


def autocast_dtype(cfg: dict):
    """The dtype the spec's training forward runs in under torch.autocast (None: float32)."""
    return AUTOCAST_DTYPES[cfg["autocast"]] if cfg.get("autocast") else None


def measured_keep(model, objective: str) -> float:
    """Kept fraction in the objective's own unit, from eval gates: weights (params) or gate-vector mean."""
    rep = gatecore.gate_report(model)
    if objective == "params":
        return 1.0 - rep.removed_fraction
    fr = [k / n for l in rep.layers for k, n in ((l.rows_kept, l.out_features), (l.cols_kept, l.in_features))]
    return sum(fr) / len(fr)


@dataclass
class TrainResult:
    curve: list = field(default_factory=list)  # [{"step", "dev_main", "loss"}] (+ removed_fraction, knob for gates)
    train_time_s: float = 0.0
    step_time_s: float = 0.0
    steps: int = 0
    final_keep_target: float | None = None  # the controller's last knob (gate methods)
    removed_asked: float | None = None  # gate methods: 1 - keep
    correction: dict | None = None  # the final exact correction (sparsity_control.correct_removed)
    objective: dict | None = None  # gate methods: the objective as trained (Objective.as_trained)


CONTROL_KEYS = (
    "control_lam_gain",
    "control_window",
    "control_lam_max",
    "control_kd",
    "control_reset",
    "control_recenter",
)


def train(
    model,
    cfg: dict,
    task: Task,
    train_enc: Encoded,
    dev_enc: Encoded | None,
    pad_id: int,
    device,
    curve_points: int = 4,
    progress: bool = True,
    val_enc: Encoded | None = None,
    partial: Path | None = None,
    partial_every_s: float = 600.0,
) -> TrainResult:
    """AdamW with the spec's schedule (module docstring); dev evaluated at `curve_points` steps for the curve.

    Three lrs: `lr` for weights/biases/LoRA, `head_lr` for the fresh task head, `gate_lr` for gates (None = lr).
    Raises FloatingPointError (naming task, method and step) on a non-finite loss instead of training on.
    `partial`: the file a killed call resumes from (module docstring, "Resuming"); None: none.
    """
    gated = cfg["method"] in GATE_METHODS
    opt = torch.optim.AdamW(param_groups(model, cfg["lr"], cfg.get("head_lr"), cfg.get("gate_lr")), weight_decay=0.0)
    per_epoch = math.ceil(len(train_enc.ids) / cfg["batch_size"])
    total = max(1, per_epoch * cfg["epochs"])
    sched = SCHEDULES[cfg.get("schedule", "linear")](opt, total, 0.06)
    at = sorted({round(total * (i + 1) / curve_points) for i in range(curve_points)}) if dev_enc else []
    curve_enc = subset(dev_enc, cfg.get("curve_dev_examples")) if dev_enc else None  # cheap curve, full dev at the end
    ctl = None
    if gated and cfg["lam"] > 0:
        ctl = SparsityController(
            cfg["objective"],
            removed_asked(cfg["keep"]),
            start=cfg["lam_warmup"],
            kp=cfg.get("control_kp", 1.0),
            ki=cfg.get("control_ki", 0.2),
            every=cfg.get("control_every", 5),
            freeze=cfg.get("control_freeze", 0.15),
            **{k[len("control_") :]: cfg[k] for k in CONTROL_KEYS if k in cfg},
        )
    objective = (
        Objective(cfg["lam"], cfg["objective"], lam_warmup=cfg["lam_warmup"], kurtosis_tau=cfg.get("kurtosis_tau"))
        if ctl is not None
        else None
    )
    rng = random.Random(train_seed(cfg))
    lengths = [len(x) for x in train_enc.ids]
    res, t0, loss_ema, start = TrainResult(), time.perf_counter(), None, 0
    model.to(device).train()
    state = partial_ckpt.load(partial, cfg, model, ctl) if partial is not None else None
    if state is not None:
        start = partial_ckpt.restore(state, model, opt, sched, ctl, device)
        res.curve, loss_ema, t0 = state["curve"], state["loss_ema"], time.perf_counter() - state["train_time_s"]
    last_save = time.perf_counter()
    bar = tqdm(
        total=total,
        initial=start,
        desc=f"{cfg['task']}/{cfg['method']} lr={cfg['lr']:g}",
        disable=not progress,
        leave=False,
    )

    def after(out):
        nonlocal t0, loss_ema, last_save
        loss_ema = out.loss if loss_ema is None else 0.9 * loss_ema + 0.1 * out.loss
        if out.step in at:
            t_eval = time.perf_counter()
            dev_main = evaluate(model, curve_enc, task, cfg["pooling"], pad_id, device)[task.metric]
            point = {"step": out.step, "dev_main": dev_main, "loss": loss_ema}
            if gated:
                point.update(removed_fraction=removed_got(model), keep_target=ctl.knob if ctl else None)
                if ctl is not None and ctl.split_range:
                    point.update(lam_scale=ctl.lam_scale)
            res.curve.append(point)
            t0 += time.perf_counter() - t_eval  # curve evaluations are not training time
        if partial is not None and out.step < total and time.perf_counter() - last_save >= partial_every_s:
            t_save = time.perf_counter()
            done = dict(curve=res.curve, loss_ema=loss_ema, train_time_s=t_save - t0)
            partial_ckpt.save(partial, partial_ckpt.snapshot(cfg, out.step, model, opt, sched, ctl, device, **done))
            last_save = time.perf_counter()
            t0 += last_save - t_save  # saving is not training time
        bar.update(1)
        bar.set_postfix(loss=f"{loss_ema:.3f}")

    order = (  # index lists only: a resumed call replays them from the seed and skips the `start` batches done
        idx
        for _ in range(cfg["epochs"])
        for idx in epoch_batches(lengths, cfg["batch_size"], rng, bool(cfg.get("bucketed")))
    )
    epochs = (collate(train_enc, idx, pad_id, device) for idx in itertools.islice(order, start, None))
    label = f"{cfg['task']}/{cfg['method']} (lr={cfg['lr']:g}, seed={train_seed(cfg)})"
    step = (
        start
        + train_loop(
            model,
            epochs,
            task_loss_fn(cfg["pooling"], task.num_labels),
            opt,
            scheduler=sched,
            objective=objective,
            controller=ctl,
            control=bool(cfg.get("control")),
            total=total,
            start=start,
            after=after,
            label=label,
            autocast=autocast_dtype(cfg),
        ).steps
    )
    bar.close()
    if partial is not None:
        partial_ckpt.remove(partial)  # a finished point never resumes
    res.train_time_s = time.perf_counter() - t0
    res.steps = step
    res.step_time_s = res.train_time_s / max(1, step)
    if gated:
        res.final_keep_target = ctl.knob if ctl else None
        res.objective = objective.as_trained(ctl).to_dict() if ctl else None
        res.removed_asked = removed_asked(cfg["keep"]) if cfg.get("keep") is not None else None
        if cfg.get("control") and res.removed_asked is not None:
            scores = Scorer(model, task, cfg["pooling"], pad_id, device, val_enc, dev_enc)
            res.correction = finish_removal(model, cfg, scores, res.removed_asked, train_enc, pad_id, device, rng)
    return res


@dataclass
class Scorer:
    """val and dev metric of the model as it is now (eval mode), for the before/after of the correction."""

    model: object
    task: Task
    pooling: str
    pad_id: int
    device: object
    val: Encoded | None
    dev: Encoded | None

    def __call__(self) -> dict:
        return {
            f"{k}_main": evaluate(self.model, enc, self.task, self.pooling, self.pad_id, self.device)[self.task.metric]
            for k, enc in (("val", self.val), ("dev", self.dev))
            if enc is not None
        }


def finish_removal(
    model, cfg: dict, scores: Scorer, asked: float, train_enc: Encoded, pad_id: int, device, rng: random.Random
) -> dict:
    """The exact final correction, with val/dev just before and after it, and the recovery phase if one is due."""
    before = removed_got(model)
    acts = abs(before - asked) > cfg.get("removed_tol", 0.02)
    pre = scores() if acts else {}
    fix = correct_removed(model, asked, cfg.get("removed_tol", 0.02))
    n_gates = sum(g.n for m in gated_layers(model).values() for g in m.gates())
    fix.update(
        gates_total=n_gates,
        changed_fraction=fix["gates_changed"] / n_gates,
        **{f"{k}_before": v for k, v in pre.items()},
    )
    if not acts:
        return fix
    fix.update({f"{k}_after": v for k, v in scores().items()})
    if cfg.get("recovery") and fix["changed_fraction"] > cfg.get("recovery_min_changed", 0.01):
        steps = max(
            RECOVERY_MIN_STEPS,
            round(cfg["recovery"] * math.ceil(len(train_enc.ids) / cfg["batch_size"]) * cfg["epochs"]),
        )
        saved = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
        loss = recover(model, cfg, train_enc, scores.task, pad_id, device, steps, rng)
        after = scores()
        kept = after.get("val_main", 0.0) >= fix.get("val_main_after", 0.0)  # chosen on val, like everything else
        if not kept:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    if n in saved:
                        p.copy_(saved[n])
        fix["recovery"] = {"steps": steps, "loss": loss, "kept": kept, **{f"{k}_after": v for k, v in after.items()}}
    return fix


RECOVERY_MIN_STEPS = 20


def recover(
    model, cfg: dict, train_enc: Encoded, task: Task, pad_id: int, device, steps: int, rng: random.Random
) -> float:
    """`steps` steps of task loss with the gate pattern frozen: eval gates (no noise), no gate gradient; the
    other trainable parameters (biases, LoRA, head) at the run's lrs, decaying linearly to 0. Returns the
    mean loss of the last tenth of the steps."""
    gates = [g for m in gated_layers(model).values() for g in m.gates()]
    flags = [g.theta.requires_grad for g in gates]
    for g in gates:
        g.theta.requires_grad_(False)
    opt = torch.optim.AdamW(param_groups(model, cfg["lr"], cfg.get("head_lr")), weight_decay=0.0)
    sched = warmup_linear_schedule(opt, steps, warm_steps=1)
    model.to(device).train()
    for g in gates:
        g.eval()  # deterministic eval gates: the pattern the compressed model keeps
    lengths, losses = [len(x) for x in train_enc.ids], []

    def draws():  # epochs of batches, as many as the steps need
        while True:
            yield from (
                collate(train_enc, idx, pad_id, device)
                for idx in epoch_batches(lengths, cfg["batch_size"], rng, bool(cfg.get("bucketed")))
            )

    try:
        train_loop(
            model,
            itertools.islice(draws(), steps),
            task_loss_fn(cfg["pooling"], task.num_labels),
            opt,
            scheduler=sched,
            total=steps,
            after=lambda out: losses.append(out.loss),
            label="recovery",
            autocast=autocast_dtype(cfg),
        )
    finally:
        for g, f in zip(gates, flags):
            g.theta.requires_grad_(f)
            g.train()
    tail = losses[-max(1, steps // 10) :]
    return sum(tail) / len(tail)


def peak_mem_mb(device) -> float:
    """Peak memory of this process: GPU allocator peak on CUDA, else the resident-set high-water mark."""
    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
