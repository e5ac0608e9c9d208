"""MPNet (all-mpnet-base-v2's architecture) in the family registry: gates, LoRA, compress with the shared
relative-position bias, export, mean pooling through its two-layer head; tiny random configs in float64,
the real checkpoint in float32 when `make base-model` has installed it."""

import copy

import pytest
import torch

import gatecore as gc
from gatecore.compress_mpnet import set_attention_sizes
from gatecore.families import encoder_layers
from gatecore.patterns import CLOSED_THETA
from gatecore.pooling import pooled_logits
from gatecore.tiny import tiny_batch, tiny_model


def make(seed=0):
    model = tiny_model("mpnet", dtype=torch.float64, seed=seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("bias"):
                p.normal_(0, 0.5)  # the init zeros them; a bias that stays alive must show
        model.mpnet.encoder.relative_attention_bias.weight.normal_(0, 2.0)  # heads' position biases differ clearly
    return model


def batch_with_padding(model):
    batch = tiny_batch(model, batch=3, seq=9)
    batch["attention_mask"][0, -3:] = 0
    return batch


def close(mod, side, idx):
    (mod.row_gate if side == "row" else mod.col_gate).theta.data[idx] = CLOSED_THETA


def rel_err(a, b):
    return ((a - b).abs().max() / b.abs().max()).item()


@torch.no_grad()
def hard_pattern(model, seed=0):
    """Unstructured + fractional gates, head 1 of layer 0 removed (so kept heads 0, 2, 3 need their own
    position biases), a query-less head, a constant FFN, a closed FFN, a LoRA update."""
    gc.random_gate_pattern(model, 0.3, seed=seed, structured=False)
    g = torch.Generator().manual_seed(seed)
    for m in gc.gated_layers(model).values():
        for gate in m.gates():
            frac = torch.rand(gate.n, generator=g) < 0.3
            gate.theta.data[frac] = torch.where(gate.theta.data[frac] > 0, 0.3, gate.theta.data[frac])
    l0, l1 = encoder_layers(model)
    close(l0.attention.attn.v, "row", torch.arange(4, 8))  # head 1: all value dims closed -> removed
    close(l0.attention.attn.q, "row", torch.arange(8, 12))  # head 2: all query dims closed -> bias + mean(V), kept
    close(l0.intermediate.dense, "col", torch.arange(16))  # layer 0: every neuron is act(bias)
    close(l1.intermediate.dense, "row", torch.arange(32))  # layer 1: FFN fully closed
    for m in gc.add_lora(model, r=2).values():
        m.lora_B.normal_(generator=g)


def test_presets_gate_every_matrix_and_lora_q_v():
    model = tiny_model("mpnet")
    names = sorted(gc.add_gates(model))
    assert len(names) == 6 * 2
    assert {n.split("layer.0.")[-1] for n in names if ".layer.0." in n} == {
        "attention.attn.q",
        "attention.attn.k",
        "attention.attn.v",
        "attention.attn.o",
        "intermediate.dense",
        "output.dense",
    }
    assert {n.rsplit(".", 1)[-1] for n in gc.add_lora(tiny_model("mpnet"))} == {"q", "v"}
    for method in gc.METHODS:  # every method sets up without explicit targets
        gc.setup_method(tiny_model("mpnet"), method)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_gates_and_lora_at_init_are_the_model(pooling):
    model = make()
    batch = batch_with_padding(model)
    with torch.no_grad():
        ref = pooled_logits(model, batch, pooling)
        gc.add_gates(model)
        gc.add_lora(model)
        assert torch.equal(pooled_logits(model, batch, pooling), ref)


@torch.no_grad()
def test_mean_pooling_feeds_the_pooled_vector_through_both_head_layers():
    model = make()
    batch = batch_with_padding(model)
    h = model.mpnet(**batch).last_hidden_state
    m = batch["attention_mask"].unsqueeze(-1).double()
    pooled = (h * m).sum(1) / m.sum(1)
    head = model.classifier
    want = head.out_proj(torch.tanh(head.dense(pooled)))
    assert rel_err(pooled_logits(model, batch, "mean"), want) < 1e-14
    assert rel_err(pooled_logits(model, batch, "mean"), pooled_logits(model, batch, "cls")) > 1e-3  # not the <s> path


@torch.no_grad()
def test_compressed_equals_gated_with_the_position_bias_of_the_kept_heads():
    model = make()
    gc.add_gates(model)
    hard_pattern(model)
    batch = batch_with_padding(model)
    ref = model(**batch).logits
    small = gc.compress(copy.deepcopy(model))
    assert type(small) is type(model)
    assert not any(isinstance(m, (gc.GatedLinear, gc.LoRALinear)) for m in small.modules())
    assert rel_err(small(**batch).logits, ref) < 1e-10
    assert rel_err(pooled_logits(small, batch, "mean"), pooled_logits(model, batch, "mean")) < 1e-10
    sizes = gc.layer_sizes(small)
    assert sizes[0].heads == 3 and sizes[0].heads_kept == [0, 2, 3] and sizes[1].intermediate == 1
    assert small.mpnet.encoder.relative_attention_bias.weight.shape[1] == 4  # the shared table stays whole
    # the gather is what keeps it exact: the first three heads' biases give another output
    att = encoder_layers(small)[0].attention.attn
    set_attention_sizes(att, 3, att.attention_head_size, [0, 1, 2])
    assert rel_err(small(**batch).logits, ref) > 1e-3


@torch.no_grad()
def test_regate_and_compress_again_composes_the_kept_heads():
    model = make()
    gc.add_gates(model)
    hard_pattern(model)
    small = gc.compress(model)
    batch = batch_with_padding(small)
    gc.add_gates(small)
    close(
        encoder_layers(small)[0].attention.attn.o, "col", torch.arange(0, small.config.gatecore_layers[0]["head_dim"])
    )
    ref = small(**batch).logits  # layer 0 now also loses its first kept head (original head 0)
    again = gc.compress(small)
    assert gc.layer_sizes(again)[0].heads_kept == [2, 3]
    assert rel_err(again(**batch).logits, ref) < 1e-10


@torch.no_grad()
def test_structured_pattern_size_report_and_export_round_trip(tmp_path):
    model = make()
    gc.add_gates(model)
    gc.random_gate_pattern(model, 0.5, seed=1)
    small = gc.compress(copy.deepcopy(model))
    rep = gc.size_report(model, small)
    assert rep.padding_weights == 0 and 0.4 < rep.encoder_linear_removed < 0.6
    assert rep.compressed_params == sum(p.numel() for p in small.parameters())
    assert rep.compressed_flops_per_token < rep.dense_flops_per_token

    hard = make()
    gc.add_gates(hard)
    hard_pattern(hard)
    small = gc.compress(hard)
    assert not small.config.gatecore_uniform
    gc.save_compressed(small, tmp_path)
    back = gc.load_compressed(tmp_path)
    batch = batch_with_padding(small)
    assert rel_err(back(**batch).logits, small(**batch).logits) < 1e-12


@torch.no_grad()
def test_uniform_compressed_mpnet_loads_with_from_pretrained(tmp_path):
    from transformers import AutoModelForSequenceClassification

    model = make()
    gc.add_gates(model)
    for layer in encoder_layers(model):
        close(layer.output.dense, "col", torch.tensor([0, 5, 9]))
    small = gc.compress(model)
    assert small.config.gatecore_uniform
    gc.save_compressed(small, tmp_path)
    back = AutoModelForSequenceClassification.from_pretrained(tmp_path).eval()
    batch = batch_with_padding(small)
    assert back.config.intermediate_size == 29
    assert rel_err(back(**batch).logits, small(**batch).logits) < 1e-12


def test_mean_pooling_refuses_a_head_it_cannot_feed():
    model = tiny_model("llama")  # `score`, no `classifier`
    with pytest.raises(ValueError, match="pooling='cls'"):
        pooled_logits(model, tiny_batch(model), "mean")


def _base_model():
    from gatecore.base_model import base_model_dir

    try:
        base_model_dir()
    except FileNotFoundError as e:
        pytest.skip(f"the real checkpoint is opt-in: {e}")
    return gc.load_model("all-mpnet-base-v2", num_labels=2)


@torch.no_grad()
def test_all_mpnet_base_v2_gates_at_init_and_compressed_equal_gated_float32():
    model, tok = _base_model()
    model.eval()
    assert type(model).__name__ == "MPNetForSequenceClassification" and model.config.num_hidden_layers == 12
    batch = dict(
        tok(
            ["a gripping, beautifully acted film .", "the plot is thin and the jokes fall flat"],
            padding=True,
            return_tensors="pt",
        )
    )
    embed = lambda m: m.mpnet(**batch).last_hidden_state  # noqa: E731  (the encoder output mean pooling reads)
    ref = embed(model)
    gc.add_gates(model)
    gc.add_lora(model)
    assert len(gc.gated_layers(model)) == 72 and torch.equal(embed(model), ref)
    gc.random_gate_pattern(model, 0.3, seed=0)
    for layer in encoder_layers(model)[:2]:  # two heads removed: their position biases must go with them
        close(layer.attention.attn.o, "col", torch.arange(64, 192))
    gated = embed(model), pooled_logits(model, batch, "mean")
    small = gc.compress(model)
    assert gc.layer_sizes(small)[0].heads == 10
    assert rel_err(embed(small), gated[0]) < 1e-5
    assert rel_err(pooled_logits(small, batch, "mean"), gated[1]) < 1e-5
