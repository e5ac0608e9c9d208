"""analysis.finetune.hf_finetune at the command line: one summary line from rank 0 only; bad input in one line."""

import re

import pytest
import torch.distributed as dist

from analysis.finetune import hf_finetune

RESULT = {
    "task": "rotten_tomatoes",
    "method": "gates",
    "metric": "accuracy",
    "dev": {"eval_accuracy": 0.75},
    "removed_got": 0.3,
    "removed_asked": 0.3,
    "dev_compressed": {"eval_accuracy": 0.75},
}


@pytest.mark.parametrize("rank", [0, 1])
def test_only_rank_zero_prints_the_summary(rank, monkeypatch, capsys):
    """Under torchrun every rank runs main(); the summary line is printed once, by rank 0."""
    monkeypatch.setattr(hf_finetune, "run", lambda cfg: dict(RESULT))
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_rank", lambda: rank)
    monkeypatch.setattr(dist, "destroy_process_group", lambda: None)
    assert hf_finetune.main([]) == 0
    out = capsys.readouterr().out
    expected = "rotten_tomatoes gates: dev accuracy 0.75, removed 30.0% (asked 30%), compressed dev 0.75\n"
    assert out == (expected if rank == 0 else "")


@pytest.mark.parametrize(
    "args,message",
    [
        (["--removed", "1.5"], r"^error: removed must be a number in \[0, 1\), got 1\.5$"),
        (["--model", "./folder/"], r"^error: model folder '\./folder/' does not exist"),
        (["--task", "csv"], r"^error: task 'csv' needs a folder of train/dev files: --data DIR"),
        (["--epochs", "x"], r"^error: argument --epochs: invalid float value: 'x'$"),
    ],
)
def test_bad_input_ends_in_one_line(args, message, capsys, tmp_path):
    assert hf_finetune.main([*args, "--out", str(tmp_path / "out")]) == 2
    got = capsys.readouterr()
    assert got.out == "" and len(got.err.splitlines()) == 1 and "Traceback" not in got.err
    assert re.search(message, got.err.strip()), got.err
    assert not (tmp_path / "out").exists()
