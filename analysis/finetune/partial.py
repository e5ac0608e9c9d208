"""Partial checkpoints of one training point, so that a point killed mid-training resumes bit for bit
(analysis/finetune/train.py writes them every `partial_every_s` seconds; docs/design.md §8, the grid rule).

A file (torch.save, read back with weights_only=True) holds what the next step depends on:
    cfg              the point's config: a file of another config is not used
    step             steps done
    model            the trainable parameters and every buffer (the frozen weights are rebuilt from cfg)
    optimizer, scheduler, controller   their state dicts (controller None without one)
    rng_cpu, rng_cuda                  torch's RNG states: gate noise and dropout draw from them
    curve, loss_ema, train_time_s      what the record reports of the steps done
The batch order is not saved: it is a function of the point's seeded `random.Random` alone, so the resumed
run replays the index lists of every epoch from the seed and skips the batches done without collating them,
which also leaves that rng where an uninterrupted run leaves it (the recovery phase draws from it next).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

FORMAT = "gatecore-partial-v1"


def model_state(model) -> dict:
    """The trainable parameters and every buffer, by name: what training changes (LoRA, gates, biases, head)."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    return params | dict(model.named_buffers())


def snapshot(cfg: dict, step: int, model, opt, sched, ctl, device, **progress) -> dict:
    """Everything the module docstring lists; `progress`: curve, loss_ema, train_time_s."""
    cuda = torch.device(device).type == "cuda"
    return {
        "format": FORMAT,
        "cfg": cfg,
        "step": step,
        "model": model_state(model),
        "optimizer": opt.state_dict(),
        "scheduler": sched.state_dict(),
        "controller": ctl.state_dict() if ctl is not None else None,
        "rng_cpu": torch.get_rng_state(),
        "rng_cuda": torch.cuda.get_rng_state(device) if cuda else None,
        **progress,
    }


def save(path: Path, state: dict) -> None:
    """Write atomically (a tmp file, then os.replace): a kill mid-write leaves the previous file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp(path)
    torch.save(state, tmp)
    os.replace(tmp, path)


def remove(path: Path) -> None:
    """Delete the file (and a tmp file a kill mid-write left)."""
    path.unlink(missing_ok=True)
    _tmp(path).unlink(missing_ok=True)


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def load(path: Path, cfg: dict, model, ctl) -> dict | None:
    """The saved state of this point, or None: no file, or (with a one-line warning) a file that is not this
    point's: unreadable, another config, or other trainable tensors. Such a file is left where it is; this
    point's first save replaces it."""
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a damaged file must not stop a sweep: the point trains from the start
        return _ignored(path, f"unreadable ({type(e).__name__}: {e})")
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        return _ignored(path, f"not a {FORMAT} file")
    if state["cfg"] != cfg:
        diff = sorted(k for k in set(cfg) | set(state["cfg"]) if cfg.get(k) != state["cfg"].get(k))
        return _ignored(path, f"written for another config (differs in {', '.join(diff)})")
    mine = model_state(model)
    if set(state["model"]) != set(mine) or any(state["model"][n].shape != t.shape for n, t in mine.items()):
        return _ignored(path, "its trainable tensors do not match this model's")
    if (state["controller"] is None) != (ctl is None):
        return _ignored(path, "its sparsity controller does not match this point's")
    return state


def _ignored(path: Path, why: str) -> None:
    print(f"warning: partial checkpoint {path} not used: {why}; training the point from the start", file=sys.stderr)
    return None


@torch.no_grad()
def restore(state: dict, model, opt, sched, ctl, device) -> int:
    """Put `load`'s state back (the model already on `device`); returns the steps done. The RNG states go last,
    so nothing here draws from them."""
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    if ctl is not None:
        ctl.load_state_dict(state["controller"])
    for name, t in model_state(model).items():
        t.copy_(state["model"][name])
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] is not None and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["rng_cuda"], device)
    return state["step"]
