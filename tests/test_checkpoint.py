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
