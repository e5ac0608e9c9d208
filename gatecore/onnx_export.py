"""ONNX export of a sequence classifier (dense, gated in eval mode, or compressed in either layout).

    export_onnx(model, "model.onnx")            # inputs input_ids, attention_mask (int64, batch x seq); output logits
    session = onnx_session("model.onnx")        # an ONNX Runtime CPU session (threads: intra-op, 0 = all cores)
    session.run(None, {"input_ids": ids, "attention_mask": mask})[0]

Batch and sequence length are dynamic axes. The graph is traced by `torch.export` (torch.onnx's dynamo
exporter) from the model in eval mode, so a gated model is exported with its deterministic eval gates.
Needs the optional packages onnx, onnxscript (export) and onnxruntime (sessions): `make onnx` or
`pip install -e .[onnx]`; without them these calls raise an ImportError saying so.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch
from torch import nn

OPSET = 18
INPUTS = ("input_ids", "attention_mask")


def require(*modules: str) -> None:
    """ImportError naming the missing optional packages and how to install them."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"ONNX export/runtime needs the optional package(s) {', '.join(missing)}: "
            "`make onnx` or `pip install -r requirements-onnx.txt`"
        )


class _Logits(nn.Module):
    """The model's logits as a function of (input_ids, attention_mask): what the ONNX graph computes."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_onnx(model: nn.Module, path: str | os.PathLike, opset: int = OPSET) -> Path:
    """Write `model` (a Hugging Face sequence classifier) as one ONNX file; returns the path.

    The model is traced in eval mode on a copy (the caller's model and its mode are untouched), with
    weights embedded in the file. Checks the packages and the path before tracing.
    """
    require("onnx", "onnxscript")
    if not isinstance(model, nn.Module) or getattr(model, "config", None) is None:
        raise TypeError(f"export_onnx needs a Hugging Face model (with a config), got {type(model).__name__}")
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"export_onnx: {str(path)!r} is a folder; pass a file path such as model.onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    traced = _Logits(copy.deepcopy(model).float() if _half(model) else copy.deepcopy(model)).eval()
    ids = torch.randint(5, model.config.vocab_size, (2, 16))
    example = (ids, torch.ones_like(ids))
    dims = {0: torch.export.Dim.AUTO, 1: torch.export.Dim.AUTO}
    tmp = path.with_name(path.name + ".tmp")
    with torch.no_grad():
        program = torch.onnx.export(
            traced,
            example,
            dynamo=True,
            opset_version=opset,
            input_names=list(INPUTS),
            output_names=["logits"],
            dynamic_shapes={"input_ids": dims, "attention_mask": dims},
            external_data=False,
        )
    program.save(str(tmp), external_data=False)
    os.replace(tmp, path)
    return path


def _half(model: nn.Module) -> bool:
    return any(p.dtype in (torch.float16, torch.bfloat16) for p in model.parameters())


def onnx_session(path: str | os.PathLike, threads: int = 0, spinning: bool = True):
    """An ONNX Runtime CPU InferenceSession with `threads` intra-op threads (0: ONNX Runtime's default, all cores).
    spinning=False stops idle intra-op threads from busy-waiting after a run (ONNX Runtime spins by default), which
    matters when several sessions or PyTorch share the cores in turn, as in an interleaved benchmark."""
    require("onnxruntime")
    import onnxruntime as ort

    if not Path(path).is_file():
        raise FileNotFoundError(f"onnx_session: {str(path)!r} is not a file; write one with gatecore.export_onnx")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def onnx_logits(session, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Run a session from `onnx_session` on int64 token ids and mask; float logits as a torch tensor."""
    feeds = {"input_ids": input_ids.to(torch.int64).numpy(), "attention_mask": attention_mask.to(torch.int64).numpy()}
    return torch.from_numpy(session.run(None, feeds)[0])
