"""The hidden-width layout: compress(layout="hidden") == gated eval model (float64 1e-10) on tiny BERT/RoBERTa/LLaMA
and MiniLM; both layouts in size_report; save/load; conversion; refusals."""

import copy

import pytest
import torch
from test_compress import hard_pattern, make, rel_err

import gatecore as gc
from gatecore.compress_hidden import InputGather, OutputScatter
from gatecore.tiny import tiny_batch, tiny_model


def wrappers(model):
    return [m for m in model.modules() if isinstance(m, (InputGather, OutputScatter))]


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-5)])
def test_hidden_layout_equals_gated(kind, dtype, tol, exact_rmsnorm):
    model = make(kind, dtype)
    hard_pattern(model, kind)
    batch = tiny_batch(model, batch=3, seq=9)
    batch["attention_mask"][0, -3:] = 0
    with torch.no_grad():
        ref = model(**batch).logits
        inner = gc.compress(copy.deepcopy(model))
        hidden = gc.compress(copy.deepcopy(model), layout="hidden")
        out = hidden(**batch).logits
    assert type(hidden) is type(model) and hidden.config.gatecore_layout == "hidden"
    assert rel_err(out, ref) < tol
    readers = {"llama": 5, "bert": 4, "roberta": 4}[kind]  # q, k, v, up (LLaMA: + gate) and two writers per layer
    assert len(wrappers(hidden)) == 2 * (readers + 2) and not wrappers(inner)
    rep_inner, rep_hidden = gc.size_report(model, inner), gc.size_report(model, hidden)
    assert rep_hidden.compressed_encoder_linear < rep_inner.compressed_encoder_linear
    # each report states both layouts, and the layout it derives equals the one measured on the other model
    assert rep_inner.inner == rep_hidden.inner and rep_inner.hidden == rep_hidden.hidden
    assert rep_hidden.hidden.params == sum(p.numel() for p in hidden.parameters())


def test_hidden_pattern_and_size_report(kind):
    """hidden=True closes f = 1 - sqrt(1 - s) of both widths (f = 1/4: whole counts in the tiny sizes), so s of
    the gated weights; the hidden layout removes s, the inner layout f."""
    model = make(kind)
    rep = gc.random_gate_pattern(model, 1 - 0.75**2, seed=1, hidden=True)
    assert rep.removed_fraction == pytest.approx(1 - 0.75**2)
    size = gc.size_report(model, gc.compress(copy.deepcopy(model), layout="hidden"))
    assert abs(size.removed("hidden")["encoder_linear_removed"] - rep.removed_fraction) < 0.02  # biases: the rest
    assert abs(size.removed("inner")["encoder_linear_removed"] - 0.25) < 0.02
    d = size.as_dict()
    assert d["layout"] == "hidden" and d["inner"]["flop_speedup_ceiling"] < d["hidden"]["flop_speedup_ceiling"]
    assert "hidden layout *" in str(size)


def test_hidden_save_load_and_convert(kind, tmp_path, exact_rmsnorm):
    model = make(kind)
    hard_pattern(model, kind)
    batch = tiny_batch(model)
    with torch.no_grad():
        ref = model(**batch).logits
        hidden = gc.compress(copy.deepcopy(model), layout="hidden")
        assert not hidden.config.gatecore_uniform
        gc.save_compressed(hidden, tmp_path)
        back = gc.load_compressed(tmp_path, attn_implementation="eager")
        assert len(wrappers(back)) == len(wrappers(hidden))
        assert rel_err(back(**batch).logits, ref) < 1e-10
        inner = gc.compress(copy.deepcopy(model))
        assert gc.compress(inner, layout="hidden") is inner  # an inner-layout model converts in place
        assert inner.config.gatecore_layout == "hidden" and len(wrappers(inner)) == len(wrappers(hidden))
        assert rel_err(inner(**batch).logits, ref) < 1e-10


def test_hidden_layout_refusals(kind):
    model = make(kind)
    gc.random_gate_pattern(model, 0.3, hidden=True)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="layout must be one of"):
        gc.compress(model, layout="residual")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    hidden = gc.compress(model, layout="hidden")
    with pytest.raises(TypeError, match="not an nn.Linear"):
        gc.add_gates(hidden)  # the wrapped readers/writers cannot be gated again
    with pytest.raises(ValueError, match="needs structured=True"):
        gc.random_gate_pattern(make(kind), 0.3, structured=False, hidden=True)


def test_minilm_hidden_layout_float64(minilm, minilm_batch):
    model = copy.deepcopy(minilm[0]).double()
    gc.add_gates(model)
    rep = gc.random_gate_pattern(model, 0.3, seed=0, hidden=True)
    with torch.no_grad():
        ref = model(**minilm_batch, output_hidden_states=True)
        small = gc.compress(copy.deepcopy(model), layout="hidden")
        out = small(**minilm_batch, output_hidden_states=True)
    for a, b in [(out.logits, ref.logits), (out.hidden_states[-1], ref.hidden_states[-1])]:
        assert rel_err(a, b) < 1e-10
    size = gc.size_report(minilm[0], small)
    assert abs(size.encoder_linear_removed - rep.removed_fraction) < 0.01
    assert size.removed("inner")["encoder_linear_removed"] < size.encoder_linear_removed - 0.1


def test_tiny_model_without_hidden_gates_is_unchanged():
    """Gates closed only on inner widths: the hidden layout wraps nothing and keeps plain from_pretrained shapes."""
    model = tiny_model("bert")
    gc.add_gates(model)
    gc.random_gate_pattern(model, 0.5)
    small = gc.compress(model, layout="hidden")
    assert not wrappers(small) and small.config.gatecore_layout == "hidden"
