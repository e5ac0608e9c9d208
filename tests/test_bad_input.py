"""Bad input: one table of wrong calls, each with the error it must raise and the model left exactly as it was.

For every row the model's modules (type and mode per name), parameters and buffers (names, shapes,
values bitwise) and requires_grad flags are compared before and after the failed call.
"""

import copy
import json
import math
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import gatecore
from gatecore.checkpoint import read_checkpoint
from gatecore.tiny import tiny_batch, tiny_model

NAN, INF = float("nan"), float("inf")


# ---- snapshot / compare ---------------------------------------------------------------------------------


def _bits(t: torch.Tensor) -> bytes:
    """The raw bytes of a tensor: NaN compares equal to the same NaN, -0.0 differs from 0.0."""
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def snapshot(model) -> dict:
    """Everything a failed call must not change: modules, tensors (bitwise), requires_grad flags."""
    return {
        "modules": [(n, type(m).__name__, m.training) for n, m in model.named_modules()],
        "params": {n: (tuple(p.shape), p.dtype, _bits(p), p.requires_grad) for n, p in model.named_parameters()},
        "buffers": {n: (tuple(b.shape), _bits(b)) for n, b in model.named_buffers()},
    }


def assert_unchanged(model, before: dict) -> None:
    after = snapshot(model)
    assert after["modules"] == before["modules"], "modules changed"
    assert after["params"].keys() == before["params"].keys(), "parameter names changed"
    for n, (shape, dtype, bits, grad) in before["params"].items():
        assert after["params"][n][:2] == (shape, dtype), f"{n}: shape/dtype changed"
        assert after["params"][n][2] == bits, f"{n}: values changed"
        assert after["params"][n][3] == grad, f"{n}: requires_grad changed"
    assert after["buffers"] == before["buffers"], "buffers changed"


# ---- models the rows start from -------------------------------------------------------------------------


class Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(3, 3)


def _gated(lora=False, rows=True, cols=True):
    model = tiny_model("bert")
    if lora:
        gatecore.add_lora(model, r=2)
    gatecore.add_gates(model, rows=rows, cols=cols)
    gatecore.mark_trainable(model)  # mixed flags: a call that froze or unfroze anything would show
    return model


def _nan_gates():
    model = _gated()
    layer = gatecore.gated_layers(model)["bert.encoder.layer.1.attention.self.value"]
    with torch.no_grad():
        layer.row_gate.theta[3] = NAN
    return model


def _headless():
    model = tiny_model("bert").bert  # the encoder alone: no classifier
    gatecore.add_gates(model)  # everything trainable: a call that froze first would show
    return model


def _train_mode_gated():
    return _gated().train()


BUILDERS = {
    "bert": lambda: tiny_model("bert"),
    "bert3": lambda: tiny_model("bert", num_labels=3),
    "frozen": lambda: tiny_model("bert").requires_grad_(False),
    "llama": lambda: tiny_model("llama"),
    "gated": _gated,
    "gated_lora": lambda: _gated(lora=True),
    "rows_only": lambda: _gated(rows=True, cols=False),
    "nan_gates": _nan_gates,
    "headless": _headless,
    "toy": Toy,
    "train_gated": _train_mode_gated,
}


# ---- files the rows read --------------------------------------------------------------------------------


def _trained_checkpoint(model, path: Path) -> Path:
    gatecore.add_lora(model, r=2)
    gatecore.add_gates(model)
    gatecore.mark_trainable(model)
    return gatecore.save_trainable(model, path, note="test")


@pytest.fixture(scope="module")
def files(tmp_path_factory, minilm) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("bad_input")
    f = {"dir": d / "a_folder", "missing": d / "no_such.pt"}
    f["dir"].mkdir()
    f["bert"] = _trained_checkpoint(tiny_model("bert"), d / "bert.pt")
    f["bert32"] = _trained_checkpoint(tiny_model("bert", hidden_size=32), d / "bert32.pt")
    f["llama"] = _trained_checkpoint(tiny_model("llama"), d / "llama.pt")
    f["minilm"] = _trained_checkpoint(copy.deepcopy(minilm[0]), d / "minilm.pt")
    good = f["bert"].read_bytes()
    for name, data in [
        ("truncated", good[: len(good) // 2]),
        ("empty", b""),
        (
            "random",
            bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0)).to(torch.uint8).tolist()),
        ),
    ]:
        f[name] = d / f"{name}.pt"
        f[name].write_bytes(data)
    f["foreign"] = d / "foreign.pt"
    torch.save({"x": torch.ones(2)}, f["foreign"])
    f["pickle"] = d / "pickle.pt"
    f["pickle"].write_bytes(pickle.dumps(Path("not/a/tensor")))  # only an unrestricted unpickler would read it
    ckpt = read_checkpoint(f["bert"])
    ckpt["layout"]["gates"]["bert.embeddings.LayerNorm"] = dict(rows=True, cols=True, sigma=0.1, reg_sigma=None)
    f["bad_layout"] = d / "bad_layout.pt"
    save_file(
        ckpt["state"],
        str(f["bad_layout"]),
        metadata={"format": ckpt["format"], "layout": json.dumps(ckpt["layout"]), "meta": "{}"},
    )  # the LoRA goes on first, then gating a LayerNorm fails: LoRA must be undone
    f["no_config"] = d / "no_config"
    f["no_config"].mkdir()
    return f


# ---- the table ------------------------------------------------------------------------------------------


def row(setup, call, err, msg, id):
    return pytest.param(setup, call, err, msg, id=id)


G, L, S, P = gatecore.add_gates, gatecore.add_lora, gatecore.sparsity_penalty, gatecore.load_trainable

# one row per line, unformatted: the table reads as a table
# fmt: off
TABLE = [
    # targets
    row("bert", lambda m, f: G(m, targets=["query", "no_such_layer"]), ValueError, r"no_such_layer.*matches no module", id="unknown-target"),
    row("bert", lambda m, f: G(m, targets=["query", "LayerNorm"]), TypeError, r"not an nn\.Linear", id="target-not-linear"),
    row("bert", lambda m, f: G(m, targets=["(unclosed"]), ValueError, r"not a valid regular expression", id="target-bad-regex"),
    row("bert", lambda m, f: G(m, targets=[1, 2]), TypeError, r"targets must be name patterns \(str\), got 1 \(int\)", id="targets-ints-gates"),
    row("bert", lambda m, f: L(m, targets=[1, 2]), TypeError, r"targets must be name patterns \(str\), got 1 \(int\)", id="targets-ints-lora"),
    row("bert", lambda m, f: G(m, targets=["query", None]), TypeError, r"got None \(NoneType\)", id="targets-none-inside"),
    row("bert", lambda m, f: G(m, targets=3), TypeError, r"targets must be a name pattern \(str\) or a list", id="targets-int"),
    row("bert", lambda m, f: G(m, targets=[]), ValueError, r"targets is empty", id="targets-empty"),
    row("toy", lambda m, f: G(m), ValueError, r"no default gate targets for model_type=None", id="no-preset"),
    row("gated_lora", lambda m, f: G(m), ValueError, r"already has gates", id="gates-twice"),
    row("gated_lora", lambda m, f: L(m), ValueError, r"already has LoRA", id="lora-twice"),
    # gate numbers
    row("bert", lambda m, f: G(m, sigma=0), ValueError, r"sigma must be a positive finite number in \(0, inf\), got 0", id="sigma-0"),
    row("bert", lambda m, f: G(m, sigma=-0.1), ValueError, r"sigma must be a positive", id="sigma-negative"),
    row("bert", lambda m, f: G(m, sigma=NAN), ValueError, r"sigma must be a positive.*got nan", id="sigma-nan"),
    row("bert", lambda m, f: G(m, sigma="0.1"), TypeError, r"sigma must be a positive.*got '0.1' \(str\)", id="sigma-str"),
    row("bert", lambda m, f: G(m, reg_sigma=0.0), ValueError, r"reg_sigma must be a positive", id="gates-reg-sigma-0"),
    row("bert", lambda m, f: G(m, init_std=-1.0), ValueError, r"init_std must be a finite number in \[0, inf\), got -1\.0", id="init-std-negative"),
    row("bert", lambda m, f: G(m, init_mean=INF), ValueError, r"init_mean must be a finite number", id="init-mean-inf"),
    row("bert", lambda m, f: G(m, rows=False, cols=False), ValueError, r"rows=True, cols=True or both", id="no-sides"),
    row("bert", lambda m, f: G(m, rows="no"), TypeError, r"rows must be True or False, got 'no'", id="rows-str"),
    # LoRA numbers
    row("bert", lambda m, f: L(m, alpha=NAN), ValueError, r"LoRA alpha must be a positive finite number in \(0, inf\), got nan", id="alpha-nan"),
    row("bert", lambda m, f: L(m, alpha="16"), TypeError, r"LoRA alpha must be .* got '16' \(str\)", id="alpha-str"),
    row("bert", lambda m, f: L(m, alpha=-16), ValueError, r"LoRA alpha must be a positive.*got -16", id="alpha-negative"),
    row("bert", lambda m, f: L(m, alpha=0), ValueError, r"LoRA alpha must be a positive", id="alpha-0"),
    row("bert", lambda m, f: L(m, r=10**6), ValueError, r"rank r for .*query \(16 x 16\) must be a positive integer in \[1, 16\], got 1000000", id="r-too-large"),
    row("bert", lambda m, f: L(m, r=0), ValueError, r"rank r must be a positive integer", id="r-0"),
    row("bert", lambda m, f: L(m, r=2.5), ValueError, r"rank r must be a positive integer", id="r-float"),
    row("bert", lambda m, f: L(m, r=True), TypeError, r"rank r must be a positive integer.*\(bool\)", id="r-bool"),
    row("bert", lambda m, f: L(m, dropout=1.0), ValueError, r"LoRA dropout must be a number in \[0, 1\), got 1\.0", id="dropout-1"),
    row("bert", lambda m, f: L(m, dropout="0.1"), TypeError, r"LoRA dropout must be", id="dropout-str"),
    row("bert", lambda m, f: L(m, targets=["query", "LayerNorm"]), TypeError, r"not an nn\.Linear", id="lora-target-not-linear"),
    # trainability
    row("headless", lambda m, f: gatecore.mark_trainable(m, head=True), ValueError, r"no task head found", id="mark-no-head"),
    row("gated", lambda m, f: gatecore.mark_trainable(m, bias="some"), ValueError, r"bias must be 'gated', 'none' or 'all'", id="mark-bad-bias"),
    row("gated", lambda m, f: gatecore.mark_trainable(m, gates="yes"), TypeError, r"gates must be True or False", id="mark-gates-str"),
    # penalty
    row("gated", lambda m, f: S(m, "l0", reg_sigma=-0.5), ValueError, r"reg_sigma must be a positive finite number in \(0, inf\), got -0\.5", id="reg-sigma-negative"),
    row("gated", lambda m, f: S(m, "l0", reg_sigma=0), ValueError, r"reg_sigma must be a positive.*got 0", id="reg-sigma-0"),
    row("gated", lambda m, f: S(m, "target", target=0.3, reg_sigma=NAN), ValueError, r"reg_sigma must be a positive.*nan", id="reg-sigma-nan"),
    row("gated", lambda m, f: gatecore.expected_kept_fraction(m, reg_sigma=-1), ValueError, r"reg_sigma must be a positive", id="kept-reg-sigma"),
    row("gated", lambda m, f: S(m, "l0", target=1.5), ValueError, r"target sparsity must be a number in \[0, 1\), got 1\.5", id="l0-target-1.5"),
    row("gated", lambda m, f: S(m, "target", target=1.0), ValueError, r"target sparsity must be a number in \[0, 1\)", id="target-1"),
    row("gated", lambda m, f: S(m, "params", target=-0.1), ValueError, r"target sparsity must be a number in \[0, 1\)", id="params-target-negative"),
    row("gated", lambda m, f: S(m, "target", target="0.3"), ValueError, r"target sparsity must be a number in \[0, 1\)", id="target-str"),
    row("gated", lambda m, f: S(m, "target"), ValueError, r"target sparsity must be a number in \[0, 1\), got None", id="target-missing"),
    row("gated", lambda m, f: S(m, "l1"), ValueError, r"kind must be one of", id="kind-unknown"),
    row("bert", lambda m, f: S(m, "l0"), ValueError, r"no gated layers", id="penalty-ungated"),
    # gate report, NaN gates, compression
    row("bert", lambda m, f: gatecore.gate_report(m), ValueError, r"no gated layers", id="report-ungated"),
    row("nan_gates", lambda m, f: gatecore.gate_report(m), ValueError, r"non-finite \(NaN/inf\) gate parameters in 1 gated layer\(s\): bert\.encoder\.layer\.1\.attention\.self\.value \(1\)", id="report-nan"),
    row("nan_gates", lambda m, f: gatecore.compress(m), ValueError, r"non-finite.*layer\.1\.attention\.self\.value", id="compress-nan"),
    row("nan_gates", lambda m, f: gatecore.check_finite_gates(m), ValueError, r"non-finite.*layer\.1\.attention\.self\.value", id="check-nan"),
    row("nan_gates", lambda m, f: gatecore.random_gate_pattern(m, 0.3), ValueError, r"non-finite", id="pattern-nan"),
    row("bert", lambda m, f: gatecore.compress(m), ValueError, r"compress needs a gated model", id="compress-ungated"),
    row("gated", lambda m, f: gatecore.random_gate_pattern(m, 1.0), ValueError, r"sparsity must be a number in \[0, 1\), got 1\.0", id="pattern-sparsity-1"),
    row("gated", lambda m, f: gatecore.random_gate_pattern(m, 0.3, structured="yes"), TypeError, r"structured must be True or False", id="pattern-structured-str"),
    # trainable-state checkpoints
    row("bert", lambda m, f: P(m, f["minilm"]), ValueError, r"does not match the model: the model has no layer bert\.encoder\.layer\.2\.", id="load-minilm-into-tiny"),
    row("bert", lambda m, f: P(m, f["bert32"]), ValueError, r"does not match the model: .*checkpoint \(2, 32\) vs model \(2, 16\)", id="load-wrong-shapes"),
    row("gated", lambda m, f: P(m, f["bert32"]), ValueError, r"does not match the model", id="load-wrong-shapes-into-gated"),
    row("rows_only", lambda m, f: P(m, f["bert"]), ValueError, r"gated with rows=True, cols=False in the model but rows=True, cols=True", id="load-into-rows-only"),
    row("llama", lambda m, f: P(m, f["bert"]), ValueError, r"does not match the model: the model has no layer bert\.", id="load-bert-into-llama"),
    row("bert", lambda m, f: P(m, f["llama"]), ValueError, r"does not match the model", id="load-llama-into-bert"),
    row("bert3", lambda m, f: P(m, f["bert"]), ValueError, r"classifier\.weight: checkpoint \(2, 16\) vs model \(3, 16\)", id="load-other-num-labels"),
    row("bert", lambda m, f: P(m, f["bad_layout"]), ValueError, r"does not match the model: .*LayerNorm.*not an nn\.Linear", id="load-fails-midway"),
    row("bert", lambda m, f: P(m, f["truncated"]), ValueError, r"truncated\.pt cannot be read as a checkpoint .*expected a gatecore trainable-state checkpoint", id="load-truncated"),
    row("bert", lambda m, f: P(m, f["random"]), ValueError, r"random\.pt cannot be read as a checkpoint", id="load-random-bytes"),
    row("bert", lambda m, f: P(m, f["empty"]), ValueError, r"empty\.pt cannot be read as a checkpoint", id="load-empty-file"),
    row("bert", lambda m, f: P(m, f["pickle"]), ValueError, r"pickle\.pt cannot be read as a checkpoint", id="load-arbitrary-pickle"),
    row("bert", lambda m, f: P(m, f["foreign"]), ValueError, r"foreign\.pt is not a gatecore trainable-state checkpoint", id="load-foreign"),
    row("bert", lambda m, f: P(m, f["missing"]), FileNotFoundError, r"no_such\.pt' does not exist", id="load-missing"),
    row("bert", lambda m, f: P(m, f["dir"]), FileNotFoundError, r"a_folder' is a folder", id="load-folder"),
    row("bert", lambda m, f: P(m, 123), TypeError, r"path must be a file path", id="load-path-int"),
    row("frozen", lambda m, f: gatecore.save_trainable(m, f["dir"] / "x.pt"), ValueError, r"no parameter of the model is trainable", id="save-nothing-trainable"),
    row("gated", lambda m, f: gatecore.save_trainable(m, f["dir"] / "y.pt", out=Path("x")), TypeError, r"meta\['out'\] is a PosixPath", id="save-meta-path"),
    row("gated", lambda m, f: gatecore.save_trainable(m, f["dir"]), IsADirectoryError, r"a_folder' is a folder", id="save-to-folder"),
    # compressed folders and model names (the model is a bystander: it must stay as it was too)
    row("gated", lambda m, f: gatecore.load_compressed("out_typo/"), FileNotFoundError, r"'out_typo/' does not exist; expected a folder written by gatecore\.save_compressed", id="load-compressed-typo"),
    row("gated", lambda m, f: gatecore.load_compressed(f["bert"]), FileNotFoundError, r"bert\.pt' is a file, not a folder", id="load-compressed-file"),
    row("gated", lambda m, f: gatecore.load_compressed(f["no_config"]), FileNotFoundError, r"has no config\.json", id="load-compressed-no-config"),
    row("gated", lambda m, f: gatecore.resolve_model("./no_such_model"), FileNotFoundError, r"'\./no_such_model' does not exist", id="resolve-dot-path"),
    row("gated", lambda m, f: gatecore.load_model(num_labels=0), ValueError, r"num_labels must be an integer in \[1, inf\), got 0", id="load-model-num-labels"),
    row("train_gated", lambda m, f: gatecore.size_report(m, m, seq=0), ValueError, r"seq must be an integer", id="size-seq-0"),
]
# fmt: on


@pytest.mark.parametrize("setup,call,err,msg", TABLE)
def test_bad_input_table(setup, call, err, msg, files):
    model = BUILDERS[setup]()
    before = snapshot(model)
    with pytest.raises(err, match=msg):
        call(model, files)
    assert_unchanged(model, before)


def test_table_size():
    assert len(TABLE) >= 40


def test_minilm_receives_a_foreign_checkpoint_unchanged(files, minilm):
    """A tiny-BERT checkpoint into MiniLM: the names fit (layers 0, 1), the shapes do not."""
    model = copy.deepcopy(minilm[0])
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"does not match the model: .*checkpoint \(2, 16\) vs model \(2, 384\)"):
        gatecore.load_trainable(model, files["bert"])
    assert_unchanged(model, before)


# ---- what a failed call leaves behind, and the decided behaviours --------------------------------------


def test_model_is_usable_after_a_refused_checkpoint(files):
    model = tiny_model("bert")
    with pytest.raises(ValueError):
        gatecore.load_trainable(model, files["bert32"])
    assert len(gatecore.add_gates(model)) == 12  # no "already has gates": nothing was left behind
    gatecore.add_lora(model)


def test_load_marks_exactly_the_saved_parameters_trainable(tmp_path):
    model = tiny_model("bert")
    gatecore.add_lora(model, r=2)
    gatecore.add_gates(model)
    gatecore.mark_trainable(model, gates=True, lora=False, bias="none", head=False)
    saved = {n for n, p in model.named_parameters() if p.requires_grad}
    path = gatecore.save_trainable(model, tmp_path / "gates_only.pt")
    fresh = tiny_model("bert")
    gatecore.load_trainable(fresh, path)
    assert {n for n, p in fresh.named_parameters() if p.requires_grad} == saved
    assert gatecore.count_parameters(fresh).as_dict() == gatecore.count_parameters(model).as_dict()


def test_checkpoint_written_before_this_change_still_loads(tmp_path):
    """The v1 layout as older gatecore wrote it: format, state, layout, meta; nothing else."""
    model = tiny_model("bert")
    gatecore.add_gates(model, targets=["value"])
    gatecore.mark_trainable(model)
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    layout = {
        "gates": {n: dict(rows=True, cols=True, sigma=0.1, reg_sigma=0.5) for n in gatecore.gated_layers(model)},
        "lora": {},
    }
    torch.save(
        {"format": "gatecore-trainable-v1", "state": state, "layout": layout, "meta": {"seed": 1}}, tmp_path / "old.pt"
    )
    fresh = tiny_model("bert")
    assert gatecore.load_trainable(fresh, tmp_path / "old.pt") == {"seed": 1}
    assert {n for n, p in fresh.named_parameters() if p.requires_grad} == set(state)


def test_compress_returns_eval_mode():
    model = _gated().train()
    gatecore.random_gate_pattern(model, 0.3)
    small = gatecore.compress(copy.deepcopy(model))
    assert not any(m.training for m in small.modules())
    batch = tiny_batch(model)
    with torch.no_grad():
        assert torch.allclose(small(**batch).logits, model.eval()(**batch).logits, rtol=1e-5, atol=1e-6)


def test_nonfinite_gates_are_named():
    model = _gated()
    assert gatecore.nonfinite_gates(model) == {}
    gatecore.check_finite_gates(model)  # a healthy model passes
    layers = gatecore.gated_layers(model)
    with torch.no_grad():
        layers["bert.encoder.layer.0.intermediate.dense"].col_gate.theta[:2] = INF
        layers["bert.encoder.layer.1.output.dense"].row_gate.theta[0] = NAN
    assert gatecore.nonfinite_gates(model) == {
        "bert.encoder.layer.0.intermediate.dense": 2,
        "bert.encoder.layer.1.output.dense": 1,
    }
    with pytest.raises(
        ValueError,
        match=r"2 gated layer\(s\): bert\.encoder\.layer\.0\.intermediate\.dense \(2\), "
        r"bert\.encoder\.layer\.1\.output\.dense \(1\)",
    ):
        gatecore.check_finite_gates(model)


def test_l0_with_a_target_warns_instead_of_ignoring_it_silently():
    model = _gated()
    with pytest.warns(UserWarning, match="kind='l0' ignores target=0.3"):
        with_target = gatecore.sparsity_penalty(model, "l0", target=0.3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(with_target, gatecore.sparsity_penalty(model, "l0"))


def test_regulariser_sigma_override_still_works():
    model = _gated()
    p = gatecore.sparsity_penalty(model, "l0", reg_sigma=0.5)
    assert 0.9 < p.item() < 1.0 and math.isfinite(p.item())


def test_no_torch_hint_about_weights_only(files):
    """torch's own message suggests weights_only=False (arbitrary code); ours must not repeat it."""
    for key in ("truncated", "random", "pickle", "empty"):
        with pytest.raises(ValueError) as e:
            gatecore.load_trainable(tiny_model("bert"), files[key])
        assert "weights_only" not in str(e.value) and e.value.__cause__ is None
    assert os.path.exists(files["bert"])
