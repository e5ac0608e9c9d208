"""Small trainable-state checkpoints: gates, LoRA, trained biases and head, plus how to re-wrap.

The file holds only the trainable tensors and the adapter layout, so it is a few MB for
MiniLM; `load_trainable` re-applies the same `add_lora`/`add_gates` to a fresh pretrained
model and loads the tensors, refusing a checkpoint that does not fit.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import torch
from torch import nn

from .gates import GatedLinear
from .inject import add_gates, add_lora
from .lora import LoRALinear

FORMAT = "gatecore-trainable-v1"


def adapter_layout(model: nn.Module) -> dict:
    """{'gates': {layer: options}, 'lora': {layer: options}} with layer names as add_* sees them."""
    gates, lora = {}, {}
    for name, m in model.named_modules():
        if isinstance(m, GatedLinear):
            g = m.gates()[0]
            gates[name] = dict(rows=m.row_gate is not None, cols=m.col_gate is not None,
                               sigma=g.sigma, reg_sigma=g.reg_sigma)
        elif isinstance(m, LoRALinear):
            layer = name[: -len(".base")] if name.endswith(".base") else name
            lora[layer] = dict(r=m.r, alpha=m.alpha, dropout=getattr(m.dropout, "p", 0.0))
    return {"gates": gates, "lora": lora}


def save_trainable(model: nn.Module, path: str | os.PathLike, **meta) -> Path:
    """Write the trainable tensors, the adapter layout and `meta` (JSON-able) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": FORMAT, "state": state, "layout": adapter_layout(model), "meta": meta}, tmp)
    os.replace(tmp, path)
    return path


def _exact(name: str) -> str:
    return re.escape(name)


def load_trainable(model: nn.Module, path: str | os.PathLike) -> dict:
    """Re-wrap `model` as recorded (if not wrapped already) and load the tensors; returns meta.

    Raises ValueError when the checkpoint's layers or shapes do not fit the model.
    """
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise ValueError(f"{path} is not a gatecore trainable-state checkpoint ({FORMAT})")
    layout, state = ckpt["layout"], ckpt["state"]
    have = adapter_layout(model)
    try:
        for name, opt in layout["lora"].items():
            if name not in have["lora"]:
                add_lora(model, targets=[_exact(name)], r=opt["r"], alpha=opt["alpha"], dropout=opt["dropout"])
        for name, opt in layout["gates"].items():
            if name not in have["gates"]:
                add_gates(model, targets=[_exact(name)], **opt)
    except (ValueError, TypeError) as e:
        raise ValueError(f"checkpoint {path} does not match the model: {e}") from None
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    wrong = [f"{n}: checkpoint {tuple(t.shape)} vs model {tuple(params[n].shape)}"
             for n, t in state.items() if n in params and params[n].shape != t.shape]
    if missing or wrong:
        raise ValueError(f"checkpoint {path} does not match the model: "
                         + "; ".join([f"no parameter {n}" for n in missing[:5]] + wrong[:5]))
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t.to(params[n].dtype))
    return ckpt.get("meta", {})
