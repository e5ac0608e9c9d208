"""ONNX export (optional packages): dense, gated-eval and compressed models in both layouts give the PyTorch
outputs in ONNX Runtime, with dynamic batch and sequence axes; a compressed MiniLM within 1e-4."""

import copy

import pytest
import torch

import gatecore as gc
from gatecore.tiny import tiny_batch, tiny_model

for _m in ("onnx", "onnxscript", "onnxruntime"):
    pytest.importorskip(_m, reason=f"{_m} not installed: ONNX is an optional extra (`make onnx`)")

from gatecore.onnx_export import export_onnx, onnx_logits, onnx_session  # noqa: E402


def models(kind):
    dense = tiny_model(kind)
    gated = copy.deepcopy(dense)
    gc.add_gates(gated)
    gc.random_gate_pattern(gated, 0.4, hidden=True)
    gated.eval()
    return {
        "dense": dense,
        "gated": gated,
        "inner": gc.compress(copy.deepcopy(gated)),
        "hidden": gc.compress(copy.deepcopy(gated), layout="hidden"),
    }


@pytest.mark.parametrize("kind,names", [("bert", ("dense", "gated", "inner", "hidden")), ("llama", ("hidden",))])
def test_onnx_matches_torch_with_dynamic_axes(kind, names, tmp_path):
    """Each export takes seconds (torch.export + translation), so LLaMA exports its hidden layout only."""
    for name, model in models(kind).items():
        if name not in names:
            continue
        session = onnx_session(export_onnx(model, tmp_path / f"{name}.onnx"), threads=1)
        for batch, seq in [(1, 5), (3, 11)]:  # neither is the traced (2, 16)
            inputs = tiny_batch(model, batch=batch, seq=seq)
            inputs["attention_mask"][0, -2:] = 0
            with torch.no_grad():
                ref = model(**inputs).logits
            out = onnx_logits(session, inputs["input_ids"], inputs["attention_mask"])
            assert out.shape == ref.shape and (out - ref).abs().max() < 1e-5, (name, batch, seq)
        assert model.training is False  # the caller's model is untouched (exported from a copy)


def test_compressed_minilm_onnx_within_1e4(minilm, minilm_batch, tmp_path):
    model = copy.deepcopy(minilm[0])
    gc.add_gates(model)
    gc.random_gate_pattern(model, 0.3, hidden=True)
    small = gc.compress(model, layout="hidden")
    path = export_onnx(small, tmp_path / "minilm.onnx")
    with torch.no_grad():
        ref = small(**minilm_batch).logits
    for session in (onnx_session(path), onnx_session(path, threads=2, spinning=False)):  # the benchmark's setting
        out = onnx_logits(session, minilm_batch["input_ids"], minilm_batch["attention_mask"])
        assert (out - ref).abs().max() < 1e-4


def test_export_refusals(tmp_path):
    with pytest.raises(TypeError, match="Hugging Face model"):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / "x.onnx")
    with pytest.raises(IsADirectoryError, match="is a folder"):
        export_onnx(tiny_model("bert"), tmp_path)
    with pytest.raises(FileNotFoundError, match="export_onnx"):
        onnx_session(tmp_path / "missing.onnx")
