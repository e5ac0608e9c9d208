"""Small trainable-state checkpoints: gates, LoRA, trained biases and head, plus how to re-wrap.

The file holds only the trainable tensors and the adapter layout, so it is a few MB for
MiniLM; `load_trainable` re-applies the same `add_lora`/`add_gates` to a fresh pretrained
model and loads the tensors, refusing a checkpoint that does not fit.

Format: a safetensors file (`gatecore-trainable-v2`: the tensors, and the layout and meta as JSON in
its header), whatever the file's name (run.safetensors is the natural one). Files written before
(`gatecore-trainable-v1`, a torch file) still load: `read_checkpoint` tells them apart by content.

Contract:
- the saved tensors are exactly the parameters with requires_grad=True at save time, so
  `save_trainable` refuses a model with nothing trainable (the file would hold nothing);
- after `load_trainable` exactly those parameters are trainable and every other one is frozen
  (old checkpoints too: they hold the same set), so training resumes as it was set up;
- `load_trainable` either succeeds or raises with the model as it was: wrappers it added are
  removed again, and no tensor or requires_grad flag changes before every check has passed.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import torch
from torch import nn

from .gates import GatedLinear
from .inject import add_gates, add_lora, set_module
from .lora import LoRALinear

FORMAT = "gatecore-trainable-v2"  # safetensors
TORCH_FORMAT = "gatecore-trainable-v1"  # a torch file, as written before; still read


def adapter_layout(model: nn.Module) -> dict:
    """{'gates': {layer: options}, 'lora': {layer: options}} with layer names as add_* sees them."""
    gates, lora = {}, {}
    for name, m in model.named_modules():
        if isinstance(m, GatedLinear):
            g = m.gates()[0]
            gates[name] = dict(
                rows=m.row_gate is not None, cols=m.col_gate is not None, sigma=g.sigma, reg_sigma=g.reg_sigma
            )
        elif isinstance(m, LoRALinear):
            layer = name[: -len(".base")] if name.endswith(".base") else name
            lora[layer] = dict(r=m.r, alpha=m.alpha, dropout=getattr(m.dropout, "p", 0.0))
    return {"gates": gates, "lora": lora}


def _check_meta(meta: dict, where: str = "meta") -> None:
    """meta must be plain data (None, bool, int, float, str, lists/tuples/dicts of them):
    anything else could not be read back by torch.load(weights_only=True)."""
    if meta is None or isinstance(meta, (bool, int, float, str)):
        return
    if isinstance(meta, (list, tuple)):
        for i, v in enumerate(meta):
            _check_meta(v, f"{where}[{i}]")
        return
    if isinstance(meta, dict):
        for k, v in meta.items():
            if not isinstance(k, str):
                raise TypeError(f"save_trainable: {where} has a non-str key {k!r}; meta must be plain JSON-like data")
            _check_meta(v, f"{where}[{k!r}]")
        return
    raise TypeError(
        f"save_trainable: {where} is a {type(meta).__name__} ({meta!r}); meta must be plain JSON-like "
        "data (None, bool, int, float, str, lists and dicts of them), e.g. str(path) for a path"
    )


def save_trainable(model: nn.Module, path: str | os.PathLike, **meta) -> Path:
    """Write the trainable tensors, the adapter layout and `meta` (JSON-like) atomically, as safetensors.

    The trainable tensors are the parameters with requires_grad=True; ValueError when there is
    none (call `gatecore.mark_trainable` first), TypeError when `meta` holds other than plain data
    (it is stored as JSON, so tuples come back as lists).
    """
    state = {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}
    if not state:
        raise ValueError(
            "save_trainable: no parameter of the model is trainable (requires_grad=True), so the "
            "checkpoint would be empty; call gatecore.mark_trainable(model, ...) first"
        )
    _check_meta(meta)
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"save_trainable: {str(path)!r} is a folder; pass a file path such as run.pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    header = {"format": FORMAT, "layout": json.dumps(adapter_layout(model)), "meta": json.dumps(meta)}
    save_file({n: t.contiguous() for n, t in state.items()}, str(tmp), metadata=header)
    os.replace(tmp, path)
    return path


def _exact(name: str) -> str:
    return re.escape(name)


_EXPECTED = f"expected a gatecore trainable-state checkpoint ({FORMAT}) written by gatecore.save_trainable"


def _damaged(path, what: str) -> ValueError:
    return ValueError(
        f"{path} is not a gatecore trainable-state checkpoint ({FORMAT}): {what}; "
        "write one with gatecore.save_trainable"
    )


def _is_safetensors(file: Path) -> bool:
    """A safetensors file starts with an 8-byte header length, then its JSON header."""
    with open(file, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and head[8:9] == b"{"


def _read_safetensors(file: Path, path) -> dict:
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            header = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # a damaged header or payload
        raise ValueError(
            f"{path} cannot be read as a checkpoint ({type(e).__name__}: truncated or damaged safetensors); {_EXPECTED}"
        ) from None
    if header.get("format") != FORMAT:
        raise _damaged(path, "no format tag")
    try:
        layout, meta = json.loads(header.get("layout", "")), json.loads(header.get("meta", "{}"))
    except json.JSONDecodeError:
        raise _damaged(path, "its adapter layout or meta is not JSON") from None
    return {"format": FORMAT, "state": state, "layout": layout, "meta": meta}


def _read_torch(file: Path, path) -> dict:
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except PermissionError:
        raise
    except Exception as e:  # truncated (an OSError too), random bytes, arbitrary pickles: torch's message misleads
        raise ValueError(
            f"{path} cannot be read as a checkpoint ({type(e).__name__}: truncated, damaged or not "
            f"a torch file); {_EXPECTED}"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != TORCH_FORMAT:
        raise _damaged(path, "no format tag")
    return ckpt


def read_checkpoint(path: str | os.PathLike) -> dict:
    """The checkpoint at `path` (safetensors, or an old torch file), its structure checked: {"format", "state",
    "layout", "meta"}; one clear error for a missing, unreadable or foreign file."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a file path (str or os.PathLike), got {path!r} ({type(path).__name__})")
    file = Path(path).expanduser()
    if not file.is_file():
        what = "is a folder" if file.is_dir() else "does not exist"
        raise FileNotFoundError(f"checkpoint {str(path)!r} {what}; {_EXPECTED}")
    ckpt = _read_safetensors(file, path) if _is_safetensors(file) else _read_torch(file, path)
    layout, state, meta = ckpt.get("layout"), ckpt.get("state"), ckpt.get("meta", {})
    if not (
        isinstance(layout, dict)
        and isinstance(layout.get("gates"), dict)
        and isinstance(layout.get("lora"), dict)
        and all(isinstance(o, dict) for o in [*layout["gates"].values(), *layout["lora"].values()])
    ):
        raise _damaged(path, "its adapter layout is damaged")
    if not (isinstance(state, dict) and all(isinstance(t, torch.Tensor) for t in state.values())):
        raise _damaged(path, "its tensors are damaged")
    if not isinstance(meta, dict):
        raise _damaged(path, "its meta is not a dict")
    return ckpt


def _has_module(model: nn.Module, name: str) -> bool:
    try:
        model.get_submodule(name)
        return True
    except AttributeError:
        return False


def _check_layers(model: nn.Module, layout: dict, path) -> None:
    """Every recorded layer exists, and a layer gated already is gated on the same sides."""
    names = [*layout["lora"], *layout["gates"]]
    missing = [n for n in dict.fromkeys(names) if not _has_module(model, n)]
    if missing:
        raise ValueError(
            f"checkpoint {path} does not match the model: the model has no layer "
            f"{', '.join(missing[:3])}{', ...' if len(missing) > 3 else ''} ({len(missing)} of the "
            f"checkpoint's layers missing); was it saved from another model?"
        )
    have = adapter_layout(model)["gates"]
    for name, opt in layout["gates"].items():
        want = (opt.get("rows"), opt.get("cols"))
        got = (have[name]["rows"], have[name]["cols"]) if name in have else want
        if got != want:
            raise ValueError(
                f"checkpoint {path} does not match the model: {name} is gated with rows={got[0]}, "
                f"cols={got[1]} in the model but rows={want[0]}, cols={want[1]} in the checkpoint"
            )


def _unwrap(model: nn.Module, added: list[tuple[str, nn.Module]]) -> None:
    """Undo wrappers added by `_wrap_as_recorded`, last first: each goes back to its `base`."""
    for name, wrapper in reversed(added):
        set_module(model, name, wrapper.base)


def _wrap_as_recorded(model: nn.Module, layout: dict, path) -> list[tuple[str, nn.Module]]:
    """Add the recorded LoRA and gates the model does not have yet; returns [(name, wrapper)] in order.

    On failure the wrappers added so far are removed before the error propagates.
    """
    have = adapter_layout(model)
    added: list[tuple[str, nn.Module]] = []
    try:
        for name, opt in layout["lora"].items():
            if name not in have["lora"]:
                added += add_lora(model, targets=[_exact(name)], **opt).items()
        for name, opt in layout["gates"].items():
            if name not in have["gates"]:
                added += add_gates(model, targets=[_exact(name)], **opt).items()
    except BaseException as e:
        _unwrap(model, added)
        if isinstance(e, (ValueError, TypeError)):
            raise ValueError(f"checkpoint {path} does not match the model: {e}") from None
        raise
    return added


def _mismatches(params: dict, state: dict) -> list[str]:
    missing = [f"no parameter {n}" for n in state if n not in params]
    wrong = [
        f"{n}: checkpoint {tuple(state[n].shape)} vs model {tuple(p.shape)}"  # in the model's order
        for n, p in params.items()
        if n in state and p.shape != state[n].shape
    ]
    return missing[:5] + wrong[:5]


def load_trainable(model: nn.Module, path: str | os.PathLike) -> dict:
    """Re-wrap `model` as recorded (if not wrapped already), load the tensors, and mark exactly the
    saved parameters trainable (every other one frozen); returns meta.

    FileNotFoundError for a missing file; ValueError naming the path for a file that is not a
    gatecore checkpoint, or whose layers or shapes do not fit the model. A call that raises
    leaves the model as it was (modules, values, requires_grad).
    """
    ckpt = read_checkpoint(path)
    layout, state = ckpt["layout"], ckpt["state"]
    _check_layers(model, layout, path)
    added = _wrap_as_recorded(model, layout, path)
    params = dict(model.named_parameters())
    bad = _mismatches(params, state)
    if bad:
        _unwrap(model, added)
        raise ValueError(f"checkpoint {path} does not match the model: " + "; ".join(bad))
    values = {n: t.to(device=params[n].device, dtype=params[n].dtype) for n, t in state.items()}  # before any copy
    with torch.no_grad():
        for n, t in values.items():
            params[n].copy_(t)
    for n, p in params.items():
        p.requires_grad_(n in state)
    return ckpt.get("meta", {})
