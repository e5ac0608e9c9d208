"""Save and load compressed models.

A folder written by `save_compressed` is a normal Hugging Face model folder (config.json +
safetensors). When every layer has the same sizes and they are expressible by the config
(`config.gatecore_uniform`), plain `AutoModel*.from_pretrained(path)` rebuilds the model. Otherwise
(per-layer sizes, BERT heads of a reduced size, MPNet head subsets, LLaMA RoPE subsets)
`load_compressed` builds the model from the config, gives every linear layer the shape of its saved
tensor and every attention module the sizes recorded in `config.gatecore_layers`, re-creates the hidden
layout's gathers and scatters from their saved indices (`*.in_index`, `*.out_index`), then loads the tensors.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from .compress import layer_sizes
from .compress_bert import set_attention_sizes as set_bert_attention_sizes
from .compress_hidden import wrap_saved
from .compress_llama import set_attention_sizes as set_llama_attention_sizes
from .compress_mpnet import set_attention_sizes as set_mpnet_attention_sizes
from .families import encoder_layers, family
from .inject import set_module


def save_compressed(model: nn.Module, path: str | os.PathLike, tokenizer=None) -> Path:
    """`model.save_pretrained(path)` for a model returned by `gatecore.compress` (and the tokenizer, if given)."""
    if not getattr(getattr(model, "config", None), "gatecore_compressed", False):
        raise ValueError(
            "save_compressed expects a model returned by gatecore.compress; "
            "for gates or LoRA before compression use gatecore.save_trainable"
        )
    path = Path(path)
    model.save_pretrained(path)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path} has no *.safetensors file; was it written by save_compressed?")
    state = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _resize_linears(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give every nn.Linear the shape of its saved weight."""
    for name, mod in list(model.named_modules()):
        w = state.get(name + ".weight")
        if isinstance(mod, nn.Linear) and w is not None and tuple(w.shape) != tuple(mod.weight.shape):
            set_module(model, name, nn.Linear(w.shape[1], w.shape[0], bias=name + ".bias" in state))


def _set_attention(model: nn.Module) -> None:
    kind = family(model)
    if kind == "bert":
        for layer, s in zip(encoder_layers(model), layer_sizes(model)):
            set_bert_attention_sizes(layer.attention.self, s.heads, s.head_dim)
    elif kind == "mpnet":
        for layer, s in zip(encoder_layers(model), layer_sizes(model)):
            set_mpnet_attention_sizes(layer.attention.attn, s.heads, s.head_dim, s.heads_kept)
    else:
        for layer, s in zip(encoder_layers(model), layer_sizes(model)):
            set_llama_attention_sizes(layer.self_attn, s.head_dim, s.heads // s.kv_heads, s.rope_dims)
            layer.mlp.intermediate_size = s.intermediate


def _tied_output_key(model: nn.Module) -> str | None:
    """The output embedding's weight name when it is the input embedding's tensor (tied: saved once), else None."""
    out = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if out is None or out.weight is not model.get_input_embeddings().weight:
        return None
    return next(n for n, m in model.named_modules() if m is out) + ".weight"


def _saved_folder(path) -> Path:
    """The local folder `path`, which must exist and hold config.json; never a hub id (nothing is fetched)."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a folder path (str or os.PathLike), got {path!r} ({type(path).__name__})")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise FileNotFoundError(
            f"load_compressed: {str(path)!r} {what}; expected a folder written by gatecore.save_compressed"
        )
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"load_compressed: {str(path)!r} has no config.json; expected a folder written by gatecore.save_compressed"
        )
    return folder


def load_compressed(path: str | os.PathLike, device=None, attn_implementation: str | None = None) -> nn.Module:
    """Load a local folder written by `save_compressed`, uniform or not; eval mode, the saved dtype.

    FileNotFoundError (naming the path) for a missing folder or one without config.json; the
    model hub is never asked.

    `attn_implementation` ("eager", "sdpa", ...) as in `from_pretrained`; None: the transformers default.
    """
    import transformers

    path = _saved_folder(path)
    cfg = transformers.AutoConfig.from_pretrained(path)
    if not getattr(cfg, "gatecore_compressed", False):
        raise ValueError(f"{path} does not hold a gatecore-compressed model (config.gatecore_compressed is not set)")
    archs = getattr(cfg, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    if cls is None:
        raise ValueError(f"{path}/config.json names no known architecture (architectures={archs!r})")
    state = _read_tensors(path)
    dtype = next(t.dtype for t in state.values() if t.is_floating_point())
    model = cls._from_config(cfg, attn_implementation=attn_implementation)
    _resize_linears(model, state)
    wrap_saved(model, state)  # the hidden layout's gathers and scatters
    _set_attention(model)
    model.to(dtype=dtype)  # before loading: load_state_dict copies into the existing dtype
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if k != _tied_output_key(model)]  # e.g. a causal LM's lm_head tied to the embedding
    if missing or unexpected:
        raise ValueError(f"{path} does not fit {archs[0]}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model.to(device=device).eval()
