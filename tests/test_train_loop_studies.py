"""gatecore.train in the convergence study and the decoder studies: each replays the loop it replaced bit for bit
(the `old_*` references are those loops as they were at main 0bf2da5; tests/test_train_loop.py says why)."""

from __future__ import annotations

import copy
import random

import pytest
import torch

import gatecore as gc
from gatecore.methods import lam_ramp, warmup_linear_schedule
from gatecore.sparsity_control import SparsityController, correct_removed, removed_got


def same_params(a, b) -> bool:
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


def old_convergence_loop(cfg, seed, method):
    """analysis/convergence/study.py `train`'s loop before the move (the polished references left out)."""
    from analysis.convergence import study
    from analysis.convergence.planted import expected_objective, gated_layer, gated_student, lora_student, make_problem

    p = make_problem(
        cfg.problem, cfg.m, cfg.n, cfg.hidden, cfg.samples, cfg.rows_off, cfg.cols_off, cfg.noise, cfg.rank, seed
    )
    spec = study.spec_of(cfg, p)
    torch.manual_seed(seed)
    gates = method == "gates"
    if gates:
        student = gated_student(p, cfg.sigma, cfg.reg_sigma, cfg.init_mean, cfg.init_std)
        planted = torch.cat([p.rows_off, p.cols_off])
        track = torch.cat([planted.nonzero()[:6, 0], (~planted).nonzero()[:6, 0]])
    else:
        student = lora_student(p, cfg.lora_r, cfg.lora_alpha)
    lr = (cfg.lr or study.LR[cfg.optimizer]) if gates else (cfg.lora_lr or study.LORA_LR[cfg.optimizer])
    params = [q for q in student.parameters() if q.requires_grad]
    opt = torch.optim.Adam(params, lr=lr) if cfg.optimizer == "adam" else torch.optim.SGD(params, lr=lr)
    tr, marks = study.Trace(method, seed), set(study.eval_steps(cfg.steps, cfg.evals))
    g = torch.Generator().manual_seed(10_000 + seed)
    student.train()
    for t in range(cfg.steps + 1):
        if t in marks:
            F, se, gsq = study.objective_and_grad(student, p, spec)
            tr.step.append(t), tr.F.append(F), tr.se.append(se), tr.grad_sq.append(gsq)
            if gates:
                b, pr, rc = study.recovery(student, p)
                tr.binary.append(b), tr.precision.append(pr), tr.recall.append(rc)
                tr.gates.append(torch.cat(gated_layer(student).eval_gates())[track].tolist())
        if t == cfg.steps:
            break
        if cfg.grad == "exact":
            loss = expected_objective(student, p, spec)[0]
        else:
            idx = torch.randperm(p.X.shape[0], generator=g)[: cfg.batch] if cfg.batch else slice(None)
            loss = ((student(p.X[idx]) - p.Y[idx]) ** 2).mean()
            if gates and spec.lam:
                target = None if spec.objective == "l0" else spec.target
                loss = loss + spec.lam * gc.sparsity_penalty(student, spec.objective, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return tr


@pytest.mark.parametrize(
    "method,changes",
    [
        ("gates", dict(batch=32)),
        ("gates", dict(objective="target")),
        ("gates", dict(grad="exact", problem="mlp", optimizer="sgd")),
        ("lora", dict()),
    ],
)
def test_convergence_run_replays_the_old_loop(method, changes):
    from dataclasses import replace

    from analysis.convergence import study
    from analysis.convergence.config import ConvergenceConfig

    cfg = replace(
        ConvergenceConfig(m=8, n=8, hidden=8, samples=64, seeds=1, steps=30, evals=6, polish_iters=5, draws=16),
        **changes,
    )
    old = old_convergence_loop(cfg, 1, method)
    new = study.train(cfg, 1, method, progress=False)
    for name in ("step", "F", "se", "grad_sq", "binary", "precision", "recall"):
        assert getattr(new, name) == getattr(old, name), name
    if method == "gates":
        assert new.gates["values"] == old.gates


def old_sparsify_stage(model, chunks, asked, cfg, gen):
    """analysis/decoder/sparsify.py `train_stage`'s loop before the move."""
    opt = torch.optim.AdamW(gc.gate_parameters(model), lr=cfg.gate_lr, weight_decay=0.0)
    sched = warmup_linear_schedule(opt, cfg.steps)
    ctrl = SparsityController(cfg.objective, asked, start=cfg.lam_warmup)
    curve = []
    model.train()
    for step in range(cfg.steps):
        ids = chunks[torch.randint(len(chunks), (cfg.batch,), generator=gen)]
        lm = model(input_ids=ids, labels=ids).loss
        pen = gc.sparsity_penalty(model, cfg.objective, target=ctrl.target_sparsity, reg_sigma=cfg.reg_sigma)
        loss = lm + cfg.lam * lam_ramp(step, cfg.steps, cfg.lam_warmup) * ctrl.lam_scale * pen
        loss.backward()
        opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
        got = removed_got(model)
        ctrl.update(step + 1, cfg.steps, got)
        if step % 10 == 0 or step == cfg.steps - 1:
            curve.append(
                {"step": step + 1, "lm_loss": lm.item(), "penalty": pen.item(), "removed": got, "knob": ctrl.knob}
            )
    model.eval()
    return {"curve": curve, "final_keep_target": ctrl.knob}


def test_decoder_sparsify_stage_replays_the_old_loop(capsys):
    from transformers import AutoModelForCausalLM

    from analysis.decoder.sparsify import SparsifyConfig, train_stage
    from gatecore.tiny import tiny_config

    torch.manual_seed(0)
    old = AutoModelForCausalLM.from_config(tiny_config("llama")).double()
    gc.add_gates(old, sigma=0.1, reg_sigma=0.5)
    gc.mark_trainable(old, gates=True, lora=False, bias="none", head=False)
    new = copy.deepcopy(old)
    chunks = torch.randint(3, 64, (10, 8), generator=torch.Generator().manual_seed(1))
    cfg = SparsifyConfig(model="tiny-llama", steps=12, batch=3, seq=8, lam_warmup=0.25)
    torch.manual_seed(2)
    a = old_sparsify_stage(old, chunks, 0.3, cfg, torch.Generator().manual_seed(3))
    torch.manual_seed(2)
    b = train_stage(new, chunks, 0.3, cfg, torch.Generator().manual_seed(3))
    assert [{k: v for k, v in p.items() if k != "seconds"} for p in b["curve"]] == a["curve"]
    assert b["final_keep_target"] == a["final_keep_target"] and same_params(old, new)


def old_decoder_train_run(base, tok, data, label_ids, pad_id, method, lr, seed, cfg):
    """analysis/decoder/finetune.py `train_run` before the move (timings left out)."""
    from torch.nn.functional import cross_entropy

    from analysis.decoder.finetune import answer_logits, encode, evaluate, setup

    torch.manual_seed(seed)
    model = copy.deepcopy(base)
    opt = torch.optim.AdamW(setup(model, method, cfg), lr=lr, weight_decay=0.0)
    sched = warmup_linear_schedule(opt, cfg.steps)
    ctrl = SparsityController("params", cfg.removed, start=cfg.lam_warmup) if method == "gates" else None
    rng, curve = random.Random(seed), []
    model.train()
    for step in range(cfg.steps):
        enc = encode(tok, rng.sample(data["train"], cfg.batch), pad_id)
        loss = cross_entropy(answer_logits(model, enc).float(), label_ids[enc["labels"]])
        total = loss
        if ctrl is not None:
            pen = gc.sparsity_penalty(model, "params", target=ctrl.target_sparsity)
            total = loss + cfg.lam * lam_ramp(step, cfg.steps, cfg.lam_warmup) * pen
        total.backward()
        opt.step(), sched.step(), opt.zero_grad(set_to_none=True)
        if ctrl is not None:
            ctrl.update(step + 1, cfg.steps, removed_got(model))
        curve.append(round(loss.item(), 4))
    rec = {"train_loss": curve}
    if ctrl is not None:
        rec["correction"] = correct_removed(model, cfg.removed)
        rec["removed_asked"], rec["removed_got"] = cfg.removed, removed_got(model)
    for split in ("val", "dev"):
        ev = evaluate(model, tok, data[split], label_ids, pad_id, cfg.eval_batch)
        rec[f"{split}_acc"], rec[f"{split}_loss"] = ev["acc"], ev["loss"]
    return rec, model


@pytest.mark.parametrize("method", ["gates", "lora-qv"])
def test_decoder_finetune_replays_the_old_loop(method):
    from analysis.decoder.finetune import FinetuneConfig, train_run
    from analysis.decoder.models import TINY, load

    base, tok = load(TINY)
    base.double()
    rng = random.Random(0)
    words = ["good", "bad", "fine", "dull", "great", "awful", "movie", "plot"]
    data = {
        s: [(" ".join(rng.choice(words) for _ in range(rng.randrange(2, 6))), rng.randrange(2)) for _ in range(n)]
        for s, n in (("train", 12), ("val", 4), ("dev", 4))
    }
    label_ids = torch.tensor([tok.encode(w, add_special_tokens=False)[0] for w in ("good", "bad")])
    cfg = FinetuneConfig(model=TINY, steps=8, batch=4, removed=0.3, lam_warmup=0.25, eval_batch=4, eval_every=3)
    old, model = old_decoder_train_run(base, tok, data, label_ids, 0, method, 5e-2, 1, cfg)
    new = train_run(base, tok, data, label_ids, 0, method, 5e-2, 1, cfg)
    assert {k: new[k] for k in old} == old
