"""analysis.bench.autocast end to end at a small size (MiniLM, one task and method, one timed step): the ratio is
float32's CPU time over autocast's, the record says which CPU flags it ran with, a rerun keeps the task; bad
input ends in one line before anything runs."""

import json

import pytest

from analysis.bench import autocast
from gatecore import local_model_dir


def test_ratio_recorded_and_resumed(tmp_path, capsys):
    out = tmp_path / "autocast.json"
    args = ["--model", str(local_model_dir()), "--tasks", "SST-2", "--methods", "lora", "--steps", "1"]
    args += ["--out", str(out)]
    assert autocast.main(args) == 0
    d = json.loads(out.read_text())
    run = d["tasks"]["SST-2"]
    r = run["methods"]["lora"]
    assert d["command"].startswith("python") and run["config"]["dtype"] == "bfloat16"
    assert r["ratio_cpu"] == r["float32_cpu_s"] / r["autocast_cpu_s"] > 0 and r["tokens_per_batch"] > 0
    assert d["median_ratio_cpu"] == {"lora": r["ratio_cpu"]} and isinstance(run["cpu_flags"], list)
    capsys.readouterr()
    assert autocast.main(args) == 0  # resumed: the task is kept, not rerun
    assert "already in" in capsys.readouterr().out and json.loads(out.read_text())["tasks"]["SST-2"] == run
    block = autocast.doc_block(tmp_path / "results")
    assert block is None  # nothing under results/bench there


@pytest.mark.parametrize(
    "args, message",
    [(["--dtype", "float64"], "invalid choice: 'float64'"), (["--steps", "0"], "--steps must be >= 1")],
)
def test_bad_input_ends_in_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as e:
        autocast.main([*args, "--out", str(tmp_path / "x.json")])
    assert e.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()
