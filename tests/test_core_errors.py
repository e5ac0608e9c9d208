"""Bad input: a clear error of the documented type, and the model left unchanged."""

import re

import pytest
import torch

import gatecore as gc
from gatecore.tiny import tiny_model


def snapshot(model):
    return [(n, type(m).__name__) for n, m in model.named_modules()], {
        n: p.clone() for n, p in model.state_dict().items()
    }


def assert_unchanged(model, snap):
    mods, state = snapshot(model)
    assert mods == snap[0]
    assert state.keys() == snap[1].keys() and all(torch.equal(state[k], snap[1][k]) for k in state)


@pytest.mark.parametrize(
    "call,err,msg",
    [
        (
            lambda m: gc.add_gates(m, targets=["query", "no_such_layer"]),
            ValueError,
            r"no_such_layer.*matches no module.*attention\.self\.query",
        ),
        (lambda m: gc.add_gates(m, targets=["query", "LayerNorm"]), TypeError, r"not an nn\.Linear"),
        (lambda m: gc.add_gates(m, sigma=0), ValueError, r"sigma must be a positive"),
        (lambda m: gc.add_gates(m, sigma=-0.1), ValueError, r"sigma must be a positive"),
        (lambda m: gc.add_gates(m, reg_sigma=0.0), ValueError, r"reg_sigma must be a positive"),
        (lambda m: gc.add_gates(m, targets=["(unclosed"]), ValueError, r"not a valid regular expression"),
        (lambda m: gc.add_lora(m, r=0), ValueError, r"rank r must be a positive integer"),
        (lambda m: gc.add_lora(m, r=2.5), ValueError, r"rank r must be a positive integer"),
        (lambda m: gc.add_lora(m, targets=["query", "LayerNorm"]), TypeError, r"not an nn\.Linear"),
    ],
)
def test_bad_input_raises_and_leaves_model_unchanged(call, err, msg):
    model = tiny_model("bert")
    snap = snapshot(model)
    with pytest.raises(err, match=msg):
        call(model)
    assert_unchanged(model, snap)


def test_wrapping_twice_is_refused_without_side_effects():
    model = tiny_model("bert")
    gc.add_gates(model, targets=["query"])
    gc.add_lora(model, targets=["value"])
    snap = snapshot(model)
    with pytest.raises(ValueError, match="already has gates"):
        gc.add_gates(model)  # the preset includes query, already gated; key etc. must not be wrapped either
    assert_unchanged(model, snap)
    with pytest.raises(ValueError, match="already has LoRA"):
        gc.add_lora(model)
    assert_unchanged(model, snap)


def test_unsupported_model_type_lists_presets():
    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(3, 3)

    toy = Toy()
    with pytest.raises(ValueError, match=re.escape("presets exist for") + r".*bert.*llama.*targets="):
        gc.add_gates(toy)
    assert isinstance(toy.fc, torch.nn.Linear)
    assert list(gc.add_gates(toy, targets=["fc"])) == ["fc"]  # targets= works for any model


@pytest.mark.parametrize("target", [-0.1, 1.0, 1.5, None, "0.3"])
def test_target_sparsity_outside_unit_interval(target):
    model = tiny_model("bert")
    gc.add_gates(model)
    for kind in ("target", "params"):
        with pytest.raises(ValueError, match=r"target sparsity must be a number in \[0, 1\)"):
            gc.sparsity_penalty(model, kind, target=target)


def test_penalty_and_report_need_gates():
    model = tiny_model("bert")
    with pytest.raises(ValueError, match="no gated layers"):
        gc.sparsity_penalty(model, "l0")
    with pytest.raises(ValueError, match="no gated layers"):
        gc.gate_report(model)
    gc.add_gates(model)
    with pytest.raises(ValueError, match="kind must be one of"):
        gc.sparsity_penalty(model, "l1")


def test_bad_bias_option_and_missing_head():
    model = tiny_model("bert")
    with pytest.raises(ValueError, match="bias must be"):
        gc.mark_trainable(model, bias="some")
    bare = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="no task head found"):
        gc.mark_trainable(bare, head=True)


def test_missing_local_model_folder_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        gc.resolve_model(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE=1"):
        gc.resolve_model("some-org/some-model")


@pytest.mark.parametrize(
    "name",
    [
        "out_typo/",
        "./run",
        "../x",
        "/no/such/model",
        "~/no_such_model_here",
        "a/b/c",
        "runs\\model",
        "existing/missing",
    ],
)
def test_local_looking_names_never_reach_the_hub(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing").mkdir()
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # online: a hub lookup would be tried

    def no_hub(*a, **k):
        raise AssertionError("the model hub was asked")

    import transformers

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", no_hub)
    monkeypatch.setattr(transformers.AutoModelForSequenceClassification, "from_pretrained", no_hub)
    assert gc.pretrained.looks_local(name)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gc.resolve_model(name)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gc.load_model(name)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        gc.load_compressed(name)


@pytest.mark.parametrize("name", ["bert-base-uncased", "sentence-transformers/all-mpnet-base-v2"])
def test_hub_ids_still_look_like_hub_ids(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert not gc.pretrained.looks_local(name)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="HF_HUB_OFFLINE=1"):
        gc.resolve_model(name)
