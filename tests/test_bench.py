"""analysis.bench (latency): timing helpers on a tiny model; the CLI end to end on MiniLM at a tiny size; the
benchmark configured in Python (no argv) in small mode."""

import copy
import json

import torch

import gatecore as gc
from analysis.bench import latency as bench
from analysis.bench.latency import BenchConfig
from gatecore.tiny import tiny_model


def test_measure_speedup_and_timing():
    dense = tiny_model("bert")
    gated = copy.deepcopy(dense)
    gc.add_gates(gated)
    gc.random_gate_pattern(gated, 0.5)
    small = gc.compress(gated)
    r = bench.measure_speedup(dense, small, batch=2, seq=8, repeats=3)
    assert r["speedup"] == r["dense_ms"] / r["compressed_ms"] and r["dense_ms"] > 0
    t = bench.time_models({"a": dense}, batch=1, seq=4, repeats=5, warmup=0)["a"]
    assert t.n == 5 and t.min_ms <= t.q25_ms <= t.median_ms <= t.q75_ms <= t.max_ms
    # two repeats (the CLI test's): the quartiles stay inside the data, so error bars are never negative
    two = bench.Timing.of([0.001, 0.010])
    assert two.min_ms <= two.q25_ms <= two.median_ms <= two.q75_ms <= two.max_ms


def test_bench_cli_synthetic_and_checkpoint(tmp_path, minilm):
    out = tmp_path / "results" / "bench"
    args = ["--batch", "1", "--seq", "16", "--repeats", "2", "--warmup", "0", "--device", "cpu", "--out", str(out)]
    assert bench.main(["--sparsity", "0.4", *args]) == 0
    d = json.loads((out / "latency_cpu_s40.json").read_text())
    assert d["command"].startswith("python") and d["versions"]["torch"] == torch.__version__ and d["threads"] >= 1
    run = d["runs"][0]
    assert abs(run["size"]["encoder_linear_removed"] - 0.4) < 0.02 and run["max_rel_diff_compressed_vs_gated"] < 1e-5
    t = run["timings"][0]
    assert t["batch"] == 1 and {"dense", "gated", "compressed"} <= set(t) and t["speedup_compressed"] > 0

    model = copy.deepcopy(minilm[0])
    gc.add_gates(model)
    gc.mark_trainable(model)
    gc.random_gate_pattern(model, 0.3, seed=1)
    gc.save_trainable(model, tmp_path / "run.pt")
    assert bench.main(["--checkpoint", str(tmp_path / "run.pt"), "--no-gated", *args]) == 0
    run = json.loads((out / "latency_cpu_run.json").read_text())["runs"][0]
    assert abs(run["gate_removed_fraction"] - 0.3) < 0.02 and "gated" not in run["timings"][0]

    figs = bench.make_figures(tmp_path / "results", tmp_path / "figures")
    assert len(figs) == 1 and figs[0].stat().st_size > 10_000


def test_bench_configured_in_python_runs_in_small_mode(tmp_path, monkeypatch, minilm):
    monkeypatch.setenv("GATECORE_SMALL", "1")
    cfg = BenchConfig(
        sparsity=(0.3, 0.4), batch=(1,), seq=8, repeats=5, warmup=0, device="cpu", threads=1, out=tmp_path
    )
    path = bench.run(cfg)
    d = json.loads(path.read_text())
    assert path.name == "latency_cpu_s30.json" and d["small_mode"] is True  # small mode: the first sparsity only
    assert d["config"]["repeats"] == 2 and d["config"]["sparsity"] == [0.3] and d["config"]["out"] == str(tmp_path)
    assert len(d["runs"]) == 1 and d["runs"][0]["timings"][0]["compressed"]["n"] == 2
