"""Exact equivalences: gates at init and LoRA with B = 0 leave the model unchanged; merge == unmerged."""

import copy

import pytest
import torch

import gatecore as gc
from gatecore.tiny import tiny_batch, tiny_model


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gates_at_init_are_identity(kind, dtype):
    model = tiny_model(kind, dtype=dtype)
    batch = tiny_batch(model)
    ref = logits(model, batch)
    layers = gc.add_gates(model)
    assert all(torch.equal(z, torch.ones_like(z)) for m in layers.values() for z in m.eval_gates())
    assert torch.equal(logits(model, batch), ref)


def test_gate_presets_pick_the_documented_layers(kind):
    model = tiny_model(kind)
    names = sorted(gc.add_gates(model))
    per_layer = 6 if kind != "llama" else 7
    assert len(names) == per_layer * model.config.num_hidden_layers
    assert not any(s in n for n in names for s in ("embeddings", "pooler", "classifier", "score", "lm_head"))
    lora = sorted(gc.add_lora(tiny_model(kind)))
    suffixes = {n.rsplit(".", 1)[-1] for n in lora}
    assert suffixes == ({"query", "value"} if kind != "llama" else {"q_proj", "v_proj"})


def test_minilm_gates_and_lora_at_init_are_identity(minilm, minilm_batch):
    model = copy.deepcopy(minilm[0])
    ref = logits(model, minilm_batch)
    gc.add_gates(model)
    gc.add_lora(model)
    assert len(gc.gated_layers(model)) == 36
    assert torch.equal(logits(model, minilm_batch), ref)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
def test_lora_merge_equals_unmerged(kind, dtype, tol):
    model = tiny_model(kind, dtype=dtype)
    batch = tiny_batch(model)
    ref = logits(model, batch)
    adapters = gc.add_lora(model, r=4, alpha=8)
    assert torch.equal(logits(model, batch), ref)  # B = 0 at init
    torch.manual_seed(1)
    for m in adapters.values():
        with torch.no_grad():
            m.lora_B.normal_(0, 0.3)
    unmerged = logits(model, batch)
    assert (unmerged - ref).abs().max() > 1e-3  # the update does something
    gc.merge_lora(model)
    assert not any(isinstance(m, gc.LoRALinear) for m in model.modules())
    merged = logits(model, batch)
    assert (merged - unmerged).abs().max() <= tol * max(1.0, unmerged.abs().max().item())


def test_gates_around_lora_and_merge_inside_gates(kind):
    model = tiny_model(kind, dtype=torch.float64)
    batch = tiny_batch(model)
    gc.add_lora(model, r=2)
    gated = gc.add_gates(model)  # gates around W + BA
    inner = [m for m in gated.values() if isinstance(m.base, gc.LoRALinear)]
    assert len(inner) == 2 * model.config.num_hidden_layers
    torch.manual_seed(2)
    for m in gated.values():
        with torch.no_grad():
            m.row_gate.theta.uniform_(-1.5, 1.5)
            m.col_gate.theta.uniform_(-1.5, 1.5)
    for m in inner:
        with torch.no_grad():
            m.base.lora_B.normal_(0, 0.3)
    before = logits(model, batch)
    gc.merge_lora(model)
    assert all(isinstance(m.base, torch.nn.Linear) for m in gated.values())
    assert torch.allclose(logits(model, batch), before, atol=1e-12, rtol=0)


def test_lora_added_to_a_gated_layer_goes_inside():
    model = tiny_model("bert")
    gc.add_gates(model)
    gc.add_lora(model)
    q = model.bert.encoder.layer[0].attention.self.query
    assert isinstance(q, gc.GatedLinear) and isinstance(q.base, gc.LoRALinear)


def test_gated_linear_formula_and_bias_is_gated():
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 4).double()
    g = gc.GatedLinear(lin).eval()
    with torch.no_grad():
        g.row_gate.theta.copy_(torch.tensor([2.0, -2.0, 0.1, -0.3]))
        g.col_gate.theta.copy_(torch.tensor([2.0, 0.0, -2.0, 0.3, -0.4]))
    x = torch.randn(3, 5, dtype=torch.float64)
    z_r = torch.clamp(torch.tanh(g.row_gate.theta) + 0.5, 0, 1)
    z_c = torch.clamp(torch.tanh(g.col_gate.theta) + 0.5, 0, 1)
    expected = ((x * z_c) @ lin.weight.T + lin.bias) * z_r
    assert torch.allclose(g(x), expected, atol=1e-14, rtol=0)
    assert torch.equal(g(x)[:, 1], torch.zeros(3, dtype=torch.float64))  # closed row: bias removed too


def test_layer_without_bias_stays_without_bias():
    model = tiny_model("llama")
    for m in gc.add_gates(model).values():
        assert m.bias is None and m.base.bias is None
    assert gc.count_parameters(gc.mark_trainable(model, bias="gated")).bias == 0
