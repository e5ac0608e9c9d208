"""gatecore.train, the one training loop: every study's loop through it replays the loop it replaced bit for bit.

Each `old_*` below is the study's own loop as it was before it moved into gatecore.train (main at 0bf2da5), kept
here as the reference: same model, same seeds, float64, a few steps; parameters, losses and the controller's state
must be identical (torch.equal, not a tolerance), which also pins the order of the random draws (gate noise,
dropout, batch order).
"""

from __future__ import annotations

import contextlib
import copy
import math
import random
from types import SimpleNamespace

import pytest
import torch

import gatecore as gc
from analysis.finetune.batching import epoch_batches
from analysis.finetune.encoding import Encoded, collate, task_loss
from analysis.finetune.train import build_model, recover, train
from gatecore.accounting import gated_layers
from gatecore.methods import SCHEDULES, lam_ramp, param_groups, warmup_linear_schedule
from gatecore.parameters import head_parameters, ids
from gatecore.pooling import pooled_logits, pooled_loss
from gatecore.sparsity_control import SparsityController, correct_removed, removed_asked, removed_got
from gatecore.tiny import tiny_model
from gatecore.train import Objective, train_loop

TASK = SimpleNamespace(num_labels=2, metric="accuracy")


def toy_encoded(n: int = 24, seed: int = 0) -> Encoded:
    rng = random.Random(seed)
    return Encoded(
        [[rng.randrange(3, 64) for _ in range(rng.randrange(3, 9))] for _ in range(n)],
        [rng.randrange(2) for _ in range(n)],
    )


def same_params(a, b) -> bool:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


def old_finetune_loop(model, cfg, task, train_enc, pad_id, device, forward=contextlib.nullcontext):
    """analysis/finetune/train.py `train`'s optimizer loop before the move (curve points left out); the forward
    pass runs in the context `forward()` makes (torch.autocast for the autocast replay)."""
    opt = torch.optim.AdamW(param_groups(model, cfg["lr"], cfg.get("head_lr"), cfg.get("gate_lr")), weight_decay=0.0)
    total = max(1, math.ceil(len(train_enc.ids) / cfg["batch_size"]) * cfg["epochs"])
    sched = SCHEDULES[cfg.get("schedule", "linear")](opt, total, 0.06)
    ctl = SparsityController(
        cfg["objective"],
        removed_asked(cfg["keep"]),
        start=cfg["lam_warmup"],
        kp=1.0,
        ki=0.2,
        every=cfg["control_every"],
        freeze=0.15,
        lam_gain=cfg["control_lam_gain"],
    )
    rng, lengths, step, losses = random.Random(cfg["seed"]), [len(x) for x in train_enc.ids], 0, []
    model.to(device).train()
    for _ in range(cfg["epochs"]):
        for idx in epoch_batches(lengths, cfg["batch_size"], rng, bool(cfg.get("bucketed"))):
            batch, labels = collate(train_enc, idx, pad_id, device)
            with forward():
                loss = task_loss(pooled_logits(model, batch, cfg["pooling"]), labels, task.num_labels)
                ramp = lam_ramp(step, total, cfg["lam_warmup"])
                pen = gc.sparsity_penalty(model, cfg["objective"], target=ctl.target_sparsity)
                loss = loss + cfg["lam"] * ctl.lam_scale * ramp * pen
            losses.append(loss.item())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            ctl.update(step, total, removed_got(model))
    return ctl, losses


def replay_cfg(objective: str, lam_gain: float, method: str = "gates+lora") -> dict:
    """The finetuning run the replays train: tiny BERT, 2 epochs of 5-example batches, a controlled penalty."""
    return dict(
        model="tiny-bert",
        task="toy",
        method=method,
        seed=3,
        lora_r=2,
        lora_alpha=4,
        epochs=2,
        batch_size=5,
        pooling="mean",
        lr=1e-2,
        head_lr=3e-2,
        gate_lr=0.3,
        lam=2.0,
        lam_warmup=0.25,
        objective=objective,
        keep=0.6,
        control=True,
        control_every=1,
        control_lam_gain=lam_gain,
        bucketed=True,
    )


@pytest.mark.parametrize("objective,lam_gain", [("params", 10.0), ("target", 0.0), ("l0", 0.0)])
def test_finetune_train_replays_the_old_loop(objective, lam_gain):
    cfg = replay_cfg(objective, lam_gain)
    enc = toy_encoded()
    old, _ = build_model(cfg, 2)
    old.double()
    new = copy.deepcopy(old)
    torch.manual_seed(11)
    ctl, _ = old_finetune_loop(old, cfg, TASK, enc, 1, "cpu")
    torch.manual_seed(11)
    res = train(new, cfg, TASK, enc, None, 1, "cpu", progress=False)
    assert res.steps == 10 and res.final_keep_target == ctl.knob
    assert res.objective == Objective(2.0 * ctl.lam_scale, objective, ctl.target_sparsity).to_dict()
    from analysis.hessian.penalty import as_trained_penalty

    assert Objective.from_dict(as_trained_penalty({"objective": res.objective})) == Objective(**res.objective)
    assert removed_got(old) > 0  # the penalty and controller did something: the replay is not of a no-op
    fix = correct_removed(old, removed_asked(cfg["keep"]), 0.02)  # what train() ends with
    assert {k: res.correction[k] for k in fix} == fix
    assert same_params(old, new)


def old_recover(model, cfg, train_enc, task, pad_id, device, steps, rng):
    """analysis/finetune/train.py `recover` before the move."""
    gates = [g for m in gated_layers(model).values() for g in m.gates()]
    flags = [g.theta.requires_grad for g in gates]
    for g in gates:
        g.theta.requires_grad_(False)
    opt = torch.optim.AdamW(param_groups(model, cfg["lr"], cfg.get("head_lr")), weight_decay=0.0)
    sched = warmup_linear_schedule(opt, steps, warm_steps=1)
    model.to(device).train()
    for g in gates:
        g.eval()
    lengths, losses, step = [len(x) for x in train_enc.ids], [], 0
    try:
        while step < steps:
            for idx in epoch_batches(lengths, cfg["batch_size"], rng, bool(cfg.get("bucketed"))):
                batch, labels = collate(train_enc, idx, pad_id, device)
                loss = task_loss(pooled_logits(model, batch, cfg["pooling"]), labels, task.num_labels)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                losses.append(loss.item())
                step += 1
                if step >= steps:
                    break
    finally:
        for g, f in zip(gates, flags):
            g.theta.requires_grad_(f)
            g.train()
    tail = losses[-max(1, steps // 10) :]
    return sum(tail) / len(tail)


def test_recovery_phase_replays_the_old_loop():
    cfg = dict(model="tiny-bert", method="gates", seed=1, batch_size=7, pooling="cls", lr=1e-2, head_lr=3e-2)
    old, _ = build_model(cfg, 2)
    old.double()
    new = copy.deepcopy(old)
    enc = toy_encoded(seed=2)
    loss_old = old_recover(old, cfg, enc, TASK, 1, "cpu", 9, random.Random(5))  # 9 steps: across an epoch's end
    loss_new = recover(new, cfg, enc, TASK, 1, "cpu", 9, random.Random(5))
    assert loss_old == loss_new and same_params(old, new)
    assert all(g.training for m in gated_layers(new).values() for g in m.gates())


def toy_batches(n: int, batch: int = 4, seq: int = 6, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [
        {
            "input_ids": torch.randint(3, 64, (batch, seq), generator=g),
            "attention_mask": torch.ones(batch, seq, dtype=torch.long),
            "labels": torch.randint(0, 2, (batch,), generator=g),
        }
        for _ in range(n)
    ]


def gated_tiny(seed: int = 0):
    """A float64 tiny BERT with dropout on (the replay must draw dropout masks in the same order) and gates."""
    model = tiny_model("bert", seed=seed, dtype=torch.float64, hidden_dropout_prob=0.1)
    torch.manual_seed(seed)
    gc.setup_method(model, "gates")
    return model


def old_train_short(model, loss_fn, batches, steps, lr_adapter, lr_head, penalty=None):
    """analysis/hessian/train.py `train_short` before the move."""
    head = ids(head_parameters(model))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(
        [
            {"params": [p for p in params if id(p) not in head], "lr": lr_adapter},
            {"params": [p for p in params if id(p) in head], "lr": lr_head},
        ],
        weight_decay=0.0,
    )
    gates = [m for m in model.modules() if isinstance(m, gc.Gate)]
    for g in gates:
        g.train()
    losses = []
    for step in range(steps):
        loss = loss_fn(model, batches[step % len(batches)])
        if gates and penalty is not None:
            loss = loss + penalty(model)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    model.eval()
    return losses


def test_hessian_short_training_replays_the_old_loop():
    from analysis.hessian.train import train_short

    old = gated_tiny()
    new = copy.deepcopy(old)
    batches, loss_fn = toy_batches(3), pooled_loss("mean")
    spec = Objective(lam=0.5, objective="target", target=0.3)
    torch.manual_seed(4)
    a = old_train_short(old, loss_fn, batches, 7, 1e-2, 3e-2, lambda m: 0.5 * gc.sparsity_penalty(m, "target", 0.3))
    torch.manual_seed(4)
    b = train_short(new, loss_fn, batches, 7, 1e-2, 3e-2, spec, progress=False)
    assert a == b and same_params(old, new)


def old_race(model, batches, loss_fn, lr, head_lr, warmup, seed):
    """analysis/hessian/race/loop.py `race`'s optimizer loop before the move (eval points left out)."""
    head = ids(head_parameters(model))
    for p in head_parameters(model):
        p.requires_grad_(head_lr is not None)
    adapter = [p for p in model.parameters() if p.requires_grad and id(p) not in head]
    groups = [{"params": adapter, "lr": lr}] + (
        [{"params": head_parameters(model), "lr": head_lr}] if head_lr is not None else []
    )
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.999), weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / max(1, warmup)))
    torch.manual_seed(seed)
    train = []
    for b in batches:
        model.eval()
        for m in model.modules():
            if isinstance(m, gc.Gate):
                m.train()
        loss = loss_fn(model, b)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        train.append(loss.item())
    model.eval()
    return train


@pytest.mark.parametrize("head_lr", [None, 3e-2])
def test_race_replays_the_old_loop(head_lr):
    from analysis.hessian.race.loop import race

    old = gated_tiny(seed=2)
    new = copy.deepcopy(old)
    batches, loss_fn = toy_batches(6, seed=1), pooled_loss("mean")
    a = old_race(old, batches, loss_fn, 1e-2, head_lr, 3, seed=7)
    out = race(new, batches, batches[:2], loss_fn, lr=1e-2, head_lr=head_lr, warmup=3, eval_every=2, seed=7)
    assert out["train_loss"] == a and out["diverged_at"] is None and out["steps"] == [0, 2, 4, 6]
    assert same_params(old, new)


def test_race_stops_at_a_non_finite_loss_before_updating():
    from analysis.hessian.race.loop import race

    model = gated_tiny()
    with torch.no_grad():
        gc.find_head(model)[1].weight[0, 0] = float("inf")
    before = {k: v.clone() for k, v in model.named_parameters()}
    out = race(
        model,
        toy_batches(3),
        toy_batches(1),
        pooled_loss("mean"),
        lr=1e-2,
        head_lr=1e-2,
        warmup=1,
        eval_every=1,
        seed=0,
    )
    assert out["diverged_at"] == 1 and out["train_loss"] == []
    assert all(torch.equal(before[k], v) for k, v in model.named_parameters())


def test_objective_round_trips_and_checks_its_fields():
    obj = Objective(lam=0.5, objective="target", target=0.3, lam_warmup=0.2, reg_sigma=0.4, kurtosis_tau=100.0)
    assert Objective.from_dict({**obj.to_dict(), "source": "a note"}) == obj
    assert obj.weight(0, 10) == 0.0 and obj.weight(1, 10) == 0.5 * 0.5 and obj.weight(9, 10, scale=3.0) == 1.5
    for bad in (dict(lam=-1.0), dict(objective="l1"), dict(target=1.0), dict(lam_warmup=2.0), dict(reg_sigma=0.0)):
        with pytest.raises(ValueError):
            Objective(**bad)


def test_loop_raises_on_a_non_finite_loss_naming_the_run_and_step():
    model = gated_tiny()
    with torch.no_grad():
        gc.find_head(model)[1].weight.fill_(float("nan"))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    with pytest.raises(FloatingPointError, match=r"non-finite loss nan at step 1/2 of toy run"):
        train_loop(model, toy_batches(2), pooled_loss("mean"), opt, label="toy run")


def test_lbfgs_minimize_is_the_closure_step_it_replaced():
    from gatecore.train import lbfgs_minimize

    x = torch.randn(20, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64) + 0.1
    loss_of = lambda w: ((x @ w[:3] + w[3] - y) ** 2).mean() + 0.01 * w.pow(4).sum()  # noqa: E731
    opts = dict(lr=1, max_iter=15, history_size=5, line_search_fn="strong_wolfe")
    a = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([a], **opts)

    def closure():
        opt.zero_grad()
        loss = loss_of(a)
        loss.backward()
        return loss

    opt.step(closure)
    b = torch.zeros(4, dtype=torch.float64, requires_grad=True)
    lbfgs_minimize([b], lambda: loss_of(b), **opts)
    assert torch.equal(a, b) and loss_of(b) < loss_of(torch.zeros(4, dtype=torch.float64))


def test_autocast_is_the_step_written_under_torch_autocast_with_float32_parameters():
    """train_loop(autocast=bfloat16) == the step written by hand under torch.autocast, != float32's step; the
    parameters and Adam state stay float32."""
    base = tiny_model("bert", seed=0)
    torch.manual_seed(0)
    gc.setup_method(base, "gates")
    batches, loss_fn, runs = toy_batches(3), pooled_loss("mean"), {}
    obj = Objective(lam=0.5, objective="target", target=0.3)
    for how in ("loop", "by hand", "float32"):
        model = copy.deepcopy(base)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        torch.manual_seed(1)
        losses = []
        if how == "by hand":
            for b in batches:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    loss = loss_fn(model, b) + obj.term(model)[0]
                losses.append(loss.item())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        else:
            dtype = torch.bfloat16 if how == "loop" else None
            train_loop(
                model, batches, loss_fn, opt, objective=obj, autocast=dtype, after=lambda o: losses.append(o.loss)
            )
        runs[how] = model, losses, opt
    (loop, l_loop, opt), (hand, l_hand, _), (f32, l_f32, _) = runs["loop"], runs["by hand"], runs["float32"]
    assert l_loop == l_hand and same_params(loop, hand)
    assert l_loop[0] != l_f32[0] and not same_params(loop, f32)
    states = [v for s in opt.state.values() for v in s.values() if v.dim()]
    assert {t.dtype for t in [*loop.parameters(), *states]} == {torch.float32}


def test_a_bad_autocast_dtype_is_refused_before_the_model_changes():
    model = gated_tiny()
    before = copy.deepcopy(model)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for bad in (torch.float64, "bfloat16"):
        with pytest.raises(ValueError, match="autocast must be None or one of torch.bfloat16, torch.float16"):
            train_loop(model, toy_batches(1), pooled_loss("mean"), opt, autocast=bad)
    assert same_params(model, before)


def test_finetune_train_under_autocast_replays_the_old_loop_run_under_autocast():
    """A spec's `autocast` reaches the loop: train() with autocast "bfloat16" == the reference loop with its forward
    pass inside torch.autocast (float32 model, bit for bit; backward, optimizer and controller outside it, as torch
    advises), and != train() in float32."""
    cfg = replay_cfg("target", 10.0, method="gates")
    enc = toy_encoded()
    old, _ = build_model(cfg, 2)
    new, f32 = copy.deepcopy(old), copy.deepcopy(old)
    torch.manual_seed(11)
    old_finetune_loop(old, cfg, TASK, enc, 1, "cpu", forward=lambda: torch.autocast("cpu", dtype=torch.bfloat16))
    correct_removed(old, removed_asked(cfg["keep"]), 0.02)
    torch.manual_seed(11)
    train(new, {**cfg, "autocast": "bfloat16"}, TASK, enc, None, 1, "cpu", progress=False)
    torch.manual_seed(11)
    train(f32, cfg, TASK, enc, None, 1, "cpu", progress=False)
    assert same_params(old, new) and not same_params(new, f32)
