"""analysis.bench.model_steps end to end at a tiny size, MiniLM standing in for the second model (the real one
is opt-in); bad input ends in one line before anything runs."""

import json

import pytest

from analysis.bench import model_steps
from gatecore import local_model_dir


def test_steps_interleaved_ratios_recorded_and_resumed(tmp_path, capsys):
    out = tmp_path / "steps.json"
    args = [
        "--model",
        str(local_model_dir()),
        "--tasks",
        "RTE",
        "--methods",
        "gates",
        "--batch",
        "4",
        "--steps",
        "1",
        "--out",
        str(out),
    ]
    assert model_steps.main(args) == 0
    d = json.loads(out.read_text())
    run = d["tasks"]["RTE"]
    assert d["command"].startswith("python") and run["config"]["baseline"] == "all-MiniLM-L6-v2"
    r = run["methods"]["gates"]
    assert len(r["all-MiniLM-L6-v2"]["cpu_s_all"]) == 1 and r["ratio_cpu"] > 0
    assert r["ratio_cpu"] == r[str(local_model_dir())]["cpu_s"] / r["all-MiniLM-L6-v2"]["cpu_s"]
    assert d["median_ratio_cpu"] == {"gates": r["ratio_cpu"]} and run["peak_rss_mb"] > 0
    capsys.readouterr()
    assert model_steps.main(args) == 0  # resumed: the task is kept, not rerun
    assert "already in" in capsys.readouterr().out and json.loads(out.read_text())["tasks"]["RTE"] == run


def test_a_missing_base_model_names_the_make_target(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GATECORE_CACHE", str(tmp_path))
    with pytest.raises(SystemExit) as e:
        model_steps.main(["--model", "all-mpnet-base-v2", "--out", str(tmp_path / "x.json")])
    assert e.value.code == 2 and "make base-model" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
