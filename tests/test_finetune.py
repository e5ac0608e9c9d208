"""analysis.finetune: a tiny end-to-end sweep writes valid records; a killed sweep resumes; compressed == gated."""
import random

import pytest
import torch

import gatecore as gc
from analysis import finetune as F
from analysis.provenance import read_jsonl
from analysis.train import build_model, encode, evaluate

CONTRACT = ["run_id", "command", "config", "seed", "versions", "device", "threads", "date", "small_mode", "task_info",
            "dev", "dev_main", "val_main", "hp_search", "params", "removed_fraction", "layers", "curve", "compressed",
            "train_time_s", "step_time_s", "peak_mem_mb", "checkpoint"]
CONFIG = ["model", "task", "method", "seed", "lr", "epochs", "batch_size", "max_len", "train_examples", "pooling"]
GATE_CONFIG = ["objective", "keep", "lam", "lam_warmup", "sigma", "reg_sigma", "bias"]


@pytest.fixture
def folder(tmp_path):
    """A word-level toy task the tiny model can learn a little: label = 'good' in the text."""
    rng = random.Random(0)
    words = ["good", "bad", "film", "plot", "dull", "fine", "acting", "long"]
    for name, n in (("train", 96), ("dev", 40)):
        lines = ["text,label"]
        for _ in range(n):
            t = " ".join(rng.choice(words) for _ in range(5))
            lines.append(f"{t},{int('good' in t)}")
        (tmp_path / f"{name}.csv").write_text("\n".join(lines) + "\n")
    return tmp_path


def argv(folder, out, *extra):
    return ["--model", "tiny-bert", "--tasks", "csv", "--data", str(folder), "--text-cols", "text", "--label-col", "label",
            "--epochs", "3", "--batch-size", "16", "--max-len", "16", "--val-examples", "16", "--curve-points", "2",
            "--out", str(out), "--checkpoint-dir", str(out.parent / "ck"), "--quiet", *extra]


def test_tiny_sweep_writes_contract_records_and_compresses_exactly(folder, tmp_path):
    out = tmp_path / "runs.jsonl"
    F.main(argv(folder, out, "--methods", "lora", "gates", "--lr", "1e-3", "3e-3", "--gate-lr", "0.5",
                "--keep", "0.5", "--no-bias-keep", "0.5"))
    recs = read_jsonl(out)
    assert [r["config"]["method"] for r in recs] == ["lora", "gates", "gates"]
    for r in recs:
        assert not [k for k in CONTRACT if k not in r]
        assert not [k for k in CONFIG if k not in r["config"]]
        assert r["task_info"]["n_dev"] == 40 and r["dev_main"] == r["dev"]["accuracy"]
        assert [h["lr"] for h in r["hp_search"]] == [1e-3, 3e-3]
        assert r["val_main"] == max(h["val_main"] for h in r["hp_search"])  # chosen on val
        assert r["config"]["lr"] == next(h["lr"] for h in r["hp_search"] if h["val_main"] == r["val_main"])
        assert r["curve"][-1]["step"] == r["steps"] and r["run_id"] == F.run_id(r["spec"])
    table = F.summary(recs).splitlines()
    assert len(table) == 4 and f"{recs[1]['dev_main']:.1f}" in table[2]
    lora, gates, no_bias = recs
    assert lora["compressed"] is None and lora["params"]["lora"] > 0 and lora["removed_fraction"] == 0.0
    assert not [k for k in GATE_CONFIG if k not in gates["config"]]
    assert gates["config"]["bias"] and not no_bias["config"]["bias"] and no_bias["params"]["bias"] == 0
    c = gates["compressed"]
    assert gates["removed_fraction"] > 0.1 and c["params_total"] < c["params_dense"]
    assert c["dev_main"] == gates["dev_main"] and c["dev"] == gates["dev"] and c["matches_gated"]
    # the checkpoint re-creates the gated model on a fresh tiny model, with the same dev predictions
    fresh, _ = build_model({**gates["config"], "method": "head"}, 2)
    gc.load_trainable(fresh, F.ROOT / gates["checkpoint"] if not gates["checkpoint"].startswith("/") else gates["checkpoint"])
    from analysis.data import load_task
    task = load_task("csv", data_dir=folder, text_cols=["text"], label_col="label")
    enc = encode(None, task.dev, 16, fresh.config.vocab_size)
    assert evaluate(fresh, enc, task, "mean", fresh.config.pad_token_id, "cpu") == gates["dev"]


def test_killed_sweep_resumes_without_duplicates_or_losses(folder, tmp_path, monkeypatch):
    out = tmp_path / "runs.jsonl"
    args = argv(folder, out, "--methods", "head", "bias", "gates", "--seeds", "0", "1", "--no-compress", "--epochs", "1")
    real, calls = F.run_one, []

    def dies_on_third(spec, a, device, progress=True):
        calls.append(spec)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the runner is killed while the third run is in flight
        return real(spec, a, device, progress)

    monkeypatch.setattr(F, "run_one", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        F.main(args)
    assert len(read_jsonl(out)) == 2
    with open(out, "a") as f:
        f.write('{"run_id": "torn')  # a writer killed mid-line
    monkeypatch.setattr(F, "run_one", real)
    F.main(args)
    ids = [r["run_id"] for r in read_jsonl(out)]
    expected = {F.run_id(s) for s in F.expand(F.parse_args(args))}
    assert len(ids) == len(set(ids)) == 6 and set(ids) == expected
    before = out.read_text()
    F.main(args)  # everything done: nothing is rerun
    assert out.read_text() == before


def test_methods_train_what_they_say():
    cfg = dict(model="tiny-bert", seed=0, lora_r=2, lora_alpha=4, sigma=0.1, reg_sigma=None, bias=True)
    count = {m: build_model({**cfg, "method": m}, 2)[0] for m in ("head", "bias", "lora", "full", "gates")}
    count = {m: gc.count_parameters(model) for m, model in count.items()}
    assert count["head"].trainable == count["head"].head > 0
    assert count["bias"].bias > 0 and count["bias"].trainable == count["bias"].bias + count["head"].head
    assert count["lora"].lora > 0 and count["lora"].bias == 0
    assert count["full"].frozen == 0
    assert count["gates"].gate > 0 and count["gates"].bias == count["bias"].bias  # the control trains the same biases
    with pytest.raises(ValueError, match="method must be one of"):
        build_model({**cfg, "method": "prefix"}, 2)


def test_mean_pooling_ignores_padding():
    model, _ = build_model(dict(model="tiny-bert", seed=0, method="head"), 2)
    from analysis.train import pooled_logits
    ids = torch.tensor([[5, 6, 7, 1, 1]])
    full = pooled_logits(model.eval(), {"input_ids": ids[:, :3], "attention_mask": torch.ones(1, 3, dtype=torch.long)}, "mean")
    padded = pooled_logits(model, {"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1, 0, 0]])}, "mean")
    assert torch.allclose(full, padded, atol=1e-6)


def test_small_mode_never_writes_into_results(monkeypatch):
    monkeypatch.setenv("GATECORE_SMALL", "1")
    a = F.parse_args(["--protocol", "cpu"])
    assert a.train_examples == 32 and a.epochs == 1
    assert not a.out.resolve().is_relative_to(F.ROOT / "results") and not a.checkpoint_dir.startswith(F.DEFAULT_CHECKPOINTS)
    monkeypatch.delenv("GATECORE_SMALL")
    a = F.parse_args(["--protocol", "cpu", "--tasks", "RTE"])  # protocol settings are defaults; explicit options win
    assert a.tasks == ["RTE"] and a.train_examples == 800 and a.out == F.ROOT / "results" / "finetune" / "cpu.jsonl"
