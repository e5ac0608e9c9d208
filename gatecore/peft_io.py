"""LoRA adapters in PEFT's format, both ways (docs/design.md §2).

    save_peft_adapter(model, "adapter/")   # PeftModel.from_pretrained(base, "adapter/") gives the same outputs
    load_peft_adapter(model, "adapter/")   # a PEFT LoRA folder onto a plain model, as gatecore LoRALinear layers

Both libraries compute `base(x) + (alpha / r) * B A dropout(x)` with A (r x in) and B (out x r), so the
conversion copies A and B. A PEFT adapter folder is `adapter_config.json` + `adapter_model.safetensors`
with keys `base_model.model.<module>.lora_A.weight` / `.lora_B.weight`, and the task head (PEFT's
`modules_to_save`) as `base_model.model.<head>.<param>`. rsLoRA (scale alpha / sqrt(r)) loads as
alpha * sqrt(r). What has no PEFT LoRA equivalent is refused before anything changes: gates, trained
biases, ranks or alphas that differ between layers; and on loading DoRA, fan_in_fan_out, LoRA biases,
per-layer rank/alpha patterns, bias != "none". PEFT itself is not needed by either call.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import torch
from torch import nn

from .families import find_head
from .gates import GatedLinear
from .inject import add_lora
from .lora import LoRALinear

PREFIX = "base_model.model."
CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"


def _lora_settings(layers: dict[str, LoRALinear]) -> tuple[int, float, float]:
    settings = {(m.r, m.alpha, float(getattr(m.dropout, "p", 0.0))) for m in layers.values()}
    if len(settings) > 1:
        raise ValueError(
            f"save_peft_adapter: the LoRA layers differ in (r, alpha, dropout): {sorted(settings)}; "
            "a PEFT adapter folder here holds one setting"
        )
    return settings.pop()


def save_peft_adapter(model: nn.Module, path: str | os.PathLike, base_model_name_or_path: str | None = None) -> Path:
    """Write the model's LoRA (and its trainable task head) as a PEFT LoRA adapter folder; returns the folder.

    ValueError for a model with gates, without LoRA, with LoRA settings that differ between layers,
    or with other trainable parameters than LoRA and the head (PEFT would not restore them).
    """
    if any(isinstance(m, GatedLinear) for m in model.modules()):
        raise ValueError(
            "save_peft_adapter: the model has gates, which PEFT's LoRA cannot hold; compress it "
            "(gatecore.compress) or save it with gatecore.save_trainable"
        )
    layers = {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}
    if not layers:
        raise ValueError("save_peft_adapter: the model has no LoRA layers (gatecore.add_lora)")
    r, alpha, dropout = _lora_settings(layers)
    head = find_head(model)
    head_params = {f"{head[0]}.{n}": p for n, p in head[1].named_parameters()} if head else {}
    head_trained = any(p.requires_grad for p in head_params.values())
    lora_ids = {id(p) for m in layers.values() for p in (m.lora_A, m.lora_B)}
    other = [
        n for n, p in model.named_parameters() if p.requires_grad and id(p) not in lora_ids and n not in head_params
    ]
    if other:
        raise ValueError(
            f"save_peft_adapter: trainable parameters besides LoRA and the head ({', '.join(other[:3])}"
            f"{', ...' if len(other) > 3 else ''}) have no place in a PEFT LoRA adapter"
        )
    tensors = {}
    for name, m in layers.items():
        tensors[f"{PREFIX}{name}.lora_A.weight"] = m.lora_A.detach()
        tensors[f"{PREFIX}{name}.lora_B.weight"] = m.lora_B.detach()
    if head_trained:
        tensors.update({PREFIX + n: p.detach() for n, p in head_params.items()})
    config = {
        "peft_type": "LORA",
        "task_type": "SEQ_CLS" if head_trained else None,
        "r": r,
        "lora_alpha": alpha,
        "lora_dropout": dropout,
        "target_modules": sorted(layers),
        "bias": "none",
        "fan_in_fan_out": False,
        "modules_to_save": [head[0]] if head_trained else None,
        "use_rslora": False,
        "use_dora": False,
        "init_lora_weights": True,
        "inference_mode": True,
        "rank_pattern": {},
        "alpha_pattern": {},
        "base_model_name_or_path": base_model_name_or_path,
    }
    from safetensors.torch import save_file

    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: t.cpu().contiguous() for k, t in tensors.items()}, str(folder / WEIGHTS), metadata={"format": "pt"})
    (folder / CONFIG).write_text(json.dumps(config, indent=2))
    return folder


def _read_adapter(path) -> tuple[dict, dict[str, torch.Tensor]]:
    folder = Path(path)
    if not (folder / CONFIG).is_file() or not (folder / WEIGHTS).is_file():
        raise FileNotFoundError(
            f"load_peft_adapter: {str(path)!r} is not a PEFT adapter folder (needs {CONFIG} and {WEIGHTS})"
        )
    config = json.loads((folder / CONFIG).read_text())
    refused = {
        "peft_type": config.get("peft_type") != "LORA",
        "use_dora": config.get("use_dora"),
        "fan_in_fan_out": config.get("fan_in_fan_out"),
        "lora_bias": config.get("lora_bias"),
        "rank_pattern": config.get("rank_pattern"),
        "alpha_pattern": config.get("alpha_pattern"),
        "bias": config.get("bias", "none") != "none",
    }
    bad = [k for k, v in refused.items() if v]
    if bad:
        raise ValueError(
            f"load_peft_adapter: {folder} uses {', '.join(f'{k}={config.get(k)!r}' for k in bad)}, "
            "which gatecore's LoRALinear does not have (plain LoRA only)"
        )
    from safetensors.torch import load_file

    return config, load_file(str(folder / WEIGHTS))


def load_peft_adapter(model: nn.Module, path: str | os.PathLike) -> dict[str, LoRALinear]:
    """Add the LoRA of a PEFT adapter folder to `model` as gatecore `LoRALinear` layers, and load its other
    tensors (e.g. the task head); returns {layer name: LoRALinear}. All checks run before the model changes."""
    config, tensors = _read_adapter(path)
    r, alpha = int(config["r"]), float(config["lora_alpha"])
    alpha = alpha * math.sqrt(r) if config.get("use_rslora") else alpha  # rsLoRA scales by alpha / sqrt(r)
    if any(not k.startswith(PREFIX) for k in tensors):
        raise ValueError(f"load_peft_adapter: {path} has keys outside {PREFIX!r}; not a PEFT model adapter")
    names = {k[len(PREFIX) :]: t for k, t in tensors.items()}
    targets = sorted({k[: -len(".lora_A.weight")] for k in names if k.endswith(".lora_A.weight")})
    params = dict(model.named_parameters())
    rest = {k: t for k, t in names.items() if not re.search(r"\.lora_[AB]\.weight$", k)}
    problems = [f"no parameter {k}" for k in rest if k not in params]
    problems += [
        f"{k}: adapter {tuple(t.shape)} vs model {tuple(params[k].shape)}"
        for k, t in rest.items()
        if k in params and params[k].shape != t.shape
    ]
    for name in targets:
        try:
            mod = model.get_submodule(name)
        except AttributeError:
            problems.append(f"no layer {name}")
            continue
        if not isinstance(mod, (nn.Linear, GatedLinear)):
            problems.append(f"{name} is a {type(mod).__name__}, not a linear layer")
            continue
        A, B = names[f"{name}.lora_A.weight"], names.get(f"{name}.lora_B.weight")
        if B is None or A.shape != (r, mod.in_features) or B.shape != (mod.out_features, r):
            problems.append(
                f"{name}: LoRA shapes {tuple(A.shape)}, {None if B is None else tuple(B.shape)} do not fit "
                f"r={r} and the layer's {mod.in_features} -> {mod.out_features}"
            )
    if not targets or problems:
        raise ValueError(
            f"load_peft_adapter: {path} does not fit the model: "
            + ("; ".join(problems[:5]) if problems else "it holds no LoRA weights")
        )
    added = add_lora(
        model, targets=[re.escape(n) for n in targets], r=r, alpha=alpha, dropout=float(config.get("lora_dropout", 0.0))
    )
    with torch.no_grad():
        for name, m in added.items():
            layer = name[: -len(".base")] if name.endswith(".base") else name
            m.lora_A.copy_(names[f"{layer}.lora_A.weight"])
            m.lora_B.copy_(names[f"{layer}.lora_B.weight"])
        for k, t in rest.items():
            params[k].copy_(t)
    return added
