"""One model-family registry (gatecore.families): inject and compress agree on the model types."""

import dataclasses

import pytest
import torch
import transformers

import gatecore as gc
from gatecore import families
from gatecore.hessian import SpectrumReport
from gatecore.tiny import TINY_SIZES

COMMON = dict(TINY_SIZES, num_labels=2)
CONFIGS = {  # tiny configs of the registry's types beyond tiny.TINY_KINDS
    "ernie": lambda: transformers.ErnieConfig(**COMMON, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0),
    "gemma": lambda: transformers.GemmaConfig(**COMMON, num_key_value_heads=2, head_dim=4),
    "olmo": lambda: transformers.OlmoConfig(**COMMON, num_key_value_heads=2),
    "qwen3": lambda: transformers.Qwen3Config(**COMMON, num_key_value_heads=2, head_dim=4),
    "phi3": lambda: transformers.Phi3Config(**COMMON, num_key_value_heads=2),
}


def tiny(kind):
    torch.manual_seed(0)
    return (
        transformers.AutoModelForSequenceClassification.from_config(CONFIGS[kind](), attn_implementation="eager")
        .double()
        .eval()
    )


def test_every_listed_type_has_both_presets_and_a_compress_verdict():
    listed = set(families.BERT_LIKE + families.MPNET_LIKE + families.LLAMA_LIKE)
    assert set(families.GATE_PRESETS) == set(families.LORA_PRESETS) == listed
    assert set(families.NOT_COMPRESSIBLE) < listed
    assert set(families.compressible_types()) == listed - set(families.NOT_COMPRESSIBLE)


# what the registry accepted before MPNet joined it (issue 25), written out so a change cannot drop one silently
ACCEPTED_BEFORE = (
    "bert",
    "roberta",
    "xlm-roberta",
    "camembert",
    "electra",
    "ernie",
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "phi3",
    "olmo",
    "olmo2",
)
COMPRESSIBLE_BEFORE = tuple(t for t in ACCEPTED_BEFORE if t not in ("qwen3", "olmo2", "gemma2", "phi3"))


def test_the_registry_rejects_nothing_it_accepted_before():
    assert set(ACCEPTED_BEFORE) <= set(families.GATE_PRESETS) & set(families.LORA_PRESETS)
    assert set(COMPRESSIBLE_BEFORE) <= set(families.compressible_types())
    assert "mpnet" in families.compressible_types()


@pytest.mark.parametrize("kind", ["ernie", "gemma", "olmo"])
def test_compress_matches_the_gated_model_on_more_types(kind):
    model = tiny(kind)
    gc.add_gates(model)
    gc.random_gate_pattern(model, 0.4, seed=1)
    ids = torch.randint(3, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        ref = model(**batch).logits
        before = sum(p.numel() for p in model.parameters())
        gc.compress(model)
        out = model(**batch).logits
    assert sum(p.numel() for p in model.parameters()) < before
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6 * ref.abs().max().item())


@pytest.mark.parametrize("kind", ["qwen3", "phi3"])
def test_listed_but_not_compressible_types_are_refused_before_any_change(kind):
    model = tiny(kind)
    gc.add_gates(model)
    layers = set(gc.gated_layers(model))
    with pytest.raises(ValueError, match=f"model_type='{kind}'.*{families.NOT_COMPRESSIBLE[kind].split()[0]}"):
        gc.compress(model)
    assert set(gc.gated_layers(model)) == layers


def test_phi3_presets_cover_its_fused_matrices():
    names = sorted(gc.add_gates(tiny("phi3")))
    assert len(names) == 4 * 2 and {n.rsplit(".", 1)[-1] for n in names} == {
        "qkv_proj",
        "o_proj",
        "gate_up_proj",
        "down_proj",
    }
    assert {n.rsplit(".", 1)[-1] for n in gc.add_lora(tiny("phi3"))} == {"qkv_proj"}


def test_spectrum_reports_are_frozen():
    rep = SpectrumReport(n=3, method="exact", products=3, wall_s=0.0, lambda_max=1.0, lambda_min=0.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rep.n = 4
    assert dataclasses.replace(rep, n=4).n == 4 and rep.n == 3
