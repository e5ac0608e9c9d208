"""compress == gated eval model on tiny BERT/RoBERTa/LLaMA, with hard gate patterns; export round trips."""

import copy

import pytest
import torch

import gatecore as gc
from gatecore.families import encoder_layers
from gatecore.patterns import CLOSED_THETA
from gatecore.tiny import tiny_batch, tiny_model


def make(kind, dtype=torch.float64, seed=0):
    extra = dict(head_dim=8, mlp_bias=True, attention_bias=True) if kind == "llama" else {}
    model = tiny_model(kind, dtype=dtype, seed=seed, **extra)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.5)  # the init zeros them; a bias that stays alive must show
    gc.add_gates(model)
    return model


def close(mod, side, idx):
    gate = mod.row_gate if side == "row" else mod.col_gate
    gate.theta.data[idx] = CLOSED_THETA


@torch.no_grad()
def hard_pattern(model, kind, seed=0):
    """Random unstructured gates + fractional gates + a dead head + a constant FFN + a dead FFN + a LoRA update."""
    gc.random_gate_pattern(model, 0.3, seed=seed, structured=False)
    g = torch.Generator().manual_seed(seed)
    for m in gc.gated_layers(model).values():
        for gate in m.gates():
            frac = torch.rand(gate.n, generator=g) < 0.3
            gate.theta.data[frac] = torch.where(gate.theta.data[frac] > 0, 0.3, gate.theta.data[frac])  # eval 0.79
    l0, l1 = encoder_layers(model)
    if kind == "llama":
        a, d = l0.self_attn, 8
        close(a.o_proj, "col", torch.arange(0, d))  # query head 0: output dims all closed
        close(a.v_proj, "row", torch.arange(d, 2 * d))  # KV group 1: heads 2, 3 see zero values
        close(a.q_proj, "row", torch.tensor([9, 13]))  # one RoPE pair of head 1 (both halves)
        close(a.v_proj, "row", torch.tensor([0, 1]))  # two value dims of KV group 0 -> head dim 6
        close(l0.mlp.gate_proj, "col", torch.arange(16)), close(l0.mlp.up_proj, "col", torch.arange(16))  # constants
        close(l1.mlp.down_proj, "col", torch.arange(32))  # FFN of layer 1 fully closed
        l1.mlp.up_proj.base.weight[:3] = 0  # weightless rows, alive by their bias
    else:
        a = l0.attention.self
        close(a.value, "row", torch.arange(4, 8))  # head 1: all value dims closed
        close(a.query, "row", torch.arange(8, 12))  # head 2: all query dims closed -> mean(V), kept
        close(l0.intermediate.dense, "col", torch.arange(16))  # layer 0: every neuron is act(bias)
        close(l1.intermediate.dense, "row", torch.arange(32))  # layer 1: FFN fully closed
        l1.attention.self.key.base.weight[:2] = 0
    lora = gc.add_lora(model, targets=["q_proj" if kind == "llama" else "query"], r=2)
    for m in lora.values():
        m.lora_B.normal_(generator=g)


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_compressed_equals_gated(kind, dtype, tol, exact_rmsnorm):
    model = make(kind, dtype)
    hard_pattern(model, kind)
    batch = tiny_batch(model, batch=3, seq=9)
    batch["attention_mask"][0, -3:] = 0  # padding in one row
    with torch.no_grad():
        ref = model(**batch).logits
        small = gc.compress(copy.deepcopy(model))
        out = small(**batch).logits
    assert type(small) is type(model)
    assert not any(isinstance(m, (gc.GatedLinear, gc.LoRALinear)) for m in small.modules())
    assert gc.size_report(model, small).encoder_linear_removed > 0.2
    assert rel_err(out, ref) < tol
    sizes = gc.layer_sizes(small)
    assert sizes[1].intermediate == 1  # fully closed FFN: one zero neuron is kept so the kernels run
    if kind == "llama":
        assert sizes[0].rope_dims is not None and sizes[0].heads == 1 and sizes[0].head_dim == 6
    else:
        assert sizes[0].heads == 3  # head 1 removed, head 2 (no query) kept


def test_scale_and_heads_recorded(kind):
    model = make(kind)
    gc.random_gate_pattern(model, 0.5, seed=1)
    small = gc.compress(model)
    for layer, s in zip(encoder_layers(small), gc.layer_sizes(small)):
        att = layer.self_attn if kind == "llama" else layer.attention.self
        assert att.scaling == pytest.approx(s.head_dim**-0.5)  # what transformers would compute; q carries the rest
        assert s.head_dim < (8 if kind == "llama" else 4) and s.padding_weights == 0


def test_no_closed_gates_keeps_shapes_and_twice_is_idempotent(kind):
    model = make(kind)
    shapes = {n: p.shape for n, p in model.named_parameters() if "theta" not in n}
    small = gc.compress(copy.deepcopy(model))
    assert {n.replace(".base", ""): p.shape for n, p in small.named_parameters()} == {
        n.replace(".base", ""): s for n, s in shapes.items()
    }
    assert small.config.gatecore_uniform
    assert gc.compress(small) is small  # nothing to do on a compressed model


def test_regate_and_compress_again(kind, exact_rmsnorm):
    model = make(kind)
    gc.random_gate_pattern(model, 0.4, seed=2, structured=False)
    small = gc.compress(model)
    batch = tiny_batch(small)
    with torch.no_grad():
        ref = small(**batch).logits
        gc.add_gates(small)  # all gates open
        again = gc.compress(copy.deepcopy(small))
        assert [p.shape for p in again.parameters()] == [
            p.shape for n, p in small.named_parameters() if "theta" not in n
        ]
        assert rel_err(again(**batch).logits, ref) < 1e-10
        gc.random_gate_pattern(small, 0.3, seed=3)  # a second round of removal on top of the first
        ref2 = small(**batch).logits
        assert rel_err(gc.compress(small)(**batch).logits, ref2) < 1e-10


def test_ungated_model_is_an_error():
    with pytest.raises(ValueError, match="gated model"):
        gc.compress(tiny_model("bert"))
    with pytest.raises(ValueError, match="model_type"):
        gc.compress(torch.nn.Sequential(gc.GatedLinear(torch.nn.Linear(2, 2))))


def test_size_report_matches_tensors(kind):
    model = make(kind)
    gc.random_gate_pattern(model, 0.3)
    dense_params = sum(p.numel() for n, p in model.named_parameters() if "theta" not in n)
    small = gc.compress(copy.deepcopy(model))
    rep = gc.size_report(model, small)
    assert rep.dense_params == dense_params
    assert rep.compressed_params == sum(p.numel() for p in small.parameters())
    linears = [m for layer in encoder_layers(small) for m in layer.modules() if isinstance(m, torch.nn.Linear)]
    assert rep.compressed_encoder_linear == sum(m.weight.numel() + m.bias.numel() for m in linears)
    assert rep.compressed_flops_per_token < rep.dense_flops_per_token
    assert 0.25 < rep.encoder_linear_removed < 0.45 and rep.padding_weights == 0


def test_save_load_round_trip(kind, tmp_path, exact_rmsnorm):
    model = make(kind)
    hard_pattern(model, kind)
    small = gc.compress(model)
    assert not small.config.gatecore_uniform
    gc.save_compressed(small, tmp_path)
    back = gc.load_compressed(tmp_path, attn_implementation="eager")
    batch = tiny_batch(small)
    with torch.no_grad():
        assert rel_err(back(**batch).logits, small(**batch).logits) < 1e-12
    with pytest.raises(ValueError, match="compress"):
        gc.save_compressed(tiny_model(kind), tmp_path / "x")


@torch.no_grad()
def test_uniform_loads_with_from_pretrained(kind, tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = make(kind)
    for layer in encoder_layers(model):
        if kind == "llama":
            close(layer.mlp.down_proj, "col", torch.tensor([0, 5, 9]))
            close(layer.self_attn.o_proj, "col", torch.arange(16, 32))  # query heads 2, 3 = KV group 1
        else:
            close(layer.output.dense, "col", torch.tensor([0, 5, 9]))
    small = gc.compress(model)
    assert small.config.gatecore_uniform
    gc.save_compressed(small, tmp_path)
    back = AutoModelForSequenceClassification.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert back.config.intermediate_size == 29
    batch = tiny_batch(small)
    assert rel_err(back(**batch).logits, small(**batch).logits) < 1e-12


def test_padding_cost_of_uniform_heads(kind):
    """Two query rows closed in one head only: the head keeps them as zero padding, and the cost is counted."""
    model = make(kind)
    layer = encoder_layers(model)[0]
    close(
        layer.self_attn.q_proj if kind == "llama" else layer.attention.self.query,
        "row",
        torch.tensor([0, 4 if kind == "llama" else 1]),
    )
    small = gc.compress(model)
    s = gc.layer_sizes(small)[0]
    assert s.head_dim == (8 if kind == "llama" else 4)
    assert s.padding_weights == 2 * 16 * (1 if kind == "llama" else 2)  # LLaMA: 2 q rows; BERT: 2 q rows + 2 k rows


@torch.no_grad()
def test_partial_gates_and_plain_lora(kind, exact_rmsnorm):
    """Gates on the FFN only, LoRA (no gates) on attention: LoRA is merged, ungated layers keep their shapes."""
    model = tiny_model(kind, dtype=torch.float64)
    ffn = [r"mlp\.(gate|up|down)_proj"] if kind == "llama" else [r"intermediate\.dense", r"layer\.\d+\.output\.dense"]
    gc.add_gates(model, targets=ffn)
    for m in gc.add_lora(model).values():
        m.lora_B.normal_()
    gc.random_gate_pattern(model, 0.5)
    batch = tiny_batch(model)
    ref = model(**batch).logits
    small = gc.compress(model)
    assert rel_err(small(**batch).logits, ref) < 1e-10
    sizes = gc.layer_sizes(small)
    assert all(s.intermediate == 16 and s.heads == 4 for s in sizes)
