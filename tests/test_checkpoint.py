"""Trainable-state checkpoints: round trip onto a fresh model, and a clear refusal of a mismatch."""

import pytest
import torch

import gatecore as gc
from gatecore.tiny import tiny_batch, tiny_model


def trained(kind="bert"):
    model = tiny_model(kind)
    gc.add_lora(model, r=2)
    gc.add_gates(model, sigma=0.2, reg_sigma=0.4)
    gc.mark_trainable(model)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p) * 0.3)
    return model


def test_round_trip_onto_fresh_model(tmp_path, kind):
    model = trained(kind)
    batch = tiny_batch(model)
    path = gc.save_trainable(model, tmp_path / "run.pt", method="gates+lora", seed=3)
    fresh = tiny_model(kind)  # same seed: same frozen weights
    meta = gc.load_trainable(fresh, path)
    assert meta == {"method": "gates+lora", "seed": 3}
    assert torch.equal(fresh(**batch).logits, model(**batch).logits)
    g = next(iter(gc.gated_layers(fresh).values()))
    assert (g.row_gate.sigma, g.row_gate.reg_sigma) == (0.2, 0.4)
    assert path.stat().st_size < 200_000
    trainable = lambda m: {n for n, p in m.named_parameters() if p.requires_grad}  # noqa: E731
    assert trainable(fresh) == trainable(model)  # the saved set, not every parameter


def test_mismatched_checkpoint_is_refused(tmp_path):
    path = gc.save_trainable(trained("bert"), tmp_path / "run.pt")
    with pytest.raises(ValueError, match="does not match the model"):
        gc.load_trainable(tiny_model("llama"), path)
    with pytest.raises(ValueError, match="does not match the model"):
        gc.load_trainable(tiny_model("bert", hidden_size=32), path)
    (tmp_path / "junk.pt").write_bytes(b"")
    torch.save({"x": 1}, tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="not a gatecore trainable-state checkpoint"):
        gc.load_trainable(tiny_model("bert"), tmp_path / "junk.pt")


def test_checkpoint_is_safetensors_and_old_torch_files_load(tmp_path, minilm):
    import copy

    from safetensors import safe_open

    from gatecore.checkpoint import TORCH_FORMAT, adapter_layout

    model = trained("bert")
    path = gc.save_trainable(model, tmp_path / "run.safetensors", config={"keep": 0.7, "tasks": ("SST-2",)})
    with safe_open(str(path), framework="pt") as f:  # a plain safetensors file: any reader sees the tensors
        assert set(f.keys()) == {n for n, p in model.named_parameters() if p.requires_grad}
    fresh = tiny_model("bert")
    assert gc.load_trainable(fresh, path) == {"config": {"keep": 0.7, "tasks": ["SST-2"]}}  # JSON: tuples -> lists
    batch = tiny_batch(model)
    assert torch.equal(fresh(**batch).logits, model(**batch).logits)

    # a file in the torch format written before (v1) still loads, with its tuples
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    torch.save(
        {"format": TORCH_FORMAT, "state": state, "layout": adapter_layout(model), "meta": {"t": (1, 2)}},
        tmp_path / "old.pt",
    )
    old = tiny_model("bert")
    assert gc.load_trainable(old, tmp_path / "old.pt") == {"t": (1, 2)}
    assert torch.equal(old(**batch).logits, model(**batch).logits)
    # and so do the committed v1 checkpoints of the Hessian study
    real = copy.deepcopy(minilm[0])
    meta = gc.load_trainable(real, "results/hessian/checkpoints/SST-2_gates-all_seed0.pt")
    assert meta["run_id"] == "fc9375a00c29" and abs(gc.gate_report(real).removed_fraction - 0.3) < 0.02

    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated or damaged"):
        gc.load_trainable(tiny_model("bert"), tmp_path / "cut.safetensors")
