"""analysis.bench.runtimes: per-round ratios on tiny models (no ONNX needed), bad CLI input, and, with the ONNX
extra installed, the whole run in small mode on a tiny local model plus its figure."""

import copy
import json

import pytest

import gatecore as gc
from analysis.bench import runtimes
from gatecore.tiny import tiny_model


def test_time_cell_ratios_per_round():
    dense = tiny_model("bert")
    gated = copy.deepcopy(dense)
    gc.add_gates(gated)
    gc.random_gate_pattern(gated, 0.4, hidden=True)
    models = {"dense": dense, "hidden_40": gc.compress(gated, layout="hidden")}
    cell = runtimes.time_cell(models, {}, batch=2, seq=8, repeats=5, warmup=0)
    row = cell["eager"]["hidden_40"]
    assert row["n"] == 5 and row["speedup_q25"] <= row["speedup"] <= row["speedup_q75"]
    assert "speedup" not in cell["eager"]["dense"] and "onnx" not in cell


@pytest.mark.parametrize(
    "args,msg",
    [(["--sparsity", "1.5"], "--sparsity 1.5"), (["--threads", "-1"], "--threads -1"), (["--batch", "0"], "--batch 0")],
)
def test_cli_refuses_bad_numbers(args, msg, tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        runtimes.main([*args, "--out", str(tmp_path)])
    assert e.value.code == 2 and msg in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_small_run_and_figure(tmp_path, monkeypatch, minilm):
    for m in ("onnx", "onnxscript", "onnxruntime"):
        pytest.importorskip(m, reason=f"{m} not installed: ONNX is an optional extra (`make onnx`)")
    model = tiny_model("bert", vocab_size=minilm[1].vocab_size)  # MiniLM's tokenizer over a tiny BERT
    model.save_pretrained(tmp_path / "tiny")
    minilm[1].save_pretrained(tmp_path / "tiny")
    monkeypatch.setenv("GATECORE_SMALL", "1")
    path = runtimes.run(
        runtimes.RuntimesConfig(model=str(tmp_path / "tiny"), seq=32, out=tmp_path / "results" / "bench")
    )
    d = json.loads(path.read_text())
    assert d["small_mode"] and set(d["models"]) == {"dense", "inner_20", "hidden_20"}
    assert all(r["onnx_max_abs_diff_vs_torch"] < 1e-5 for r in d["models"].values())
    cell = d["cells"][0]
    assert cell["threads"] == 1 and set(cell) >= {"eager", "onnx"} and cell["onnx"]["hidden_20"]["speedup"] > 0
    d["small_mode"] = False  # the figure skips small-mode runs
    path.write_text(json.dumps(d))
    figs = runtimes.make_figures(tmp_path / "results", tmp_path / "figures")
    assert len(figs) == 1 and figs[0].stat().st_size > 10_000
    assert "| ONNX Runtime | 1 | 1 (2) |" in runtimes.summary_table(tmp_path / "results")
    block = runtimes.doc_block(tmp_path / "results")
    assert block.startswith("| runtime |") and path.name in block
