"""A training point killed mid-run resumes from its partial checkpoint (analysis/finetune/partial.py) to the same
result, bit for bit, as an uninterrupted run; a finished point leaves no file; a file of another config is not used."""

import dataclasses
import json

import pytest
import torch
from planted_task import planted_task
from test_finetune import argv

import gatecore.train
from analysis.finetune import runner, sweep
from analysis.finetune import train as train_mod
from analysis.finetune.config import SweepConfig
from analysis.finetune.train import build_model, train
from analysis.finetune.validate import ConfigError
from analysis.provenance import read_jsonl
from gatecore import sparsity_control as sc

TIMINGS = ("train_time_s", "step_time_s")
TRAIN_STEP = gatecore.train.train_step  # the real one, whatever a test patched in


@pytest.fixture(scope="module")
def planted():
    """A word-level task the tiny model learns a little: label = 'good' in the text (64 train: 8 steps an epoch)."""
    return planted_task(64, 24, 12)


BASE = dict(model="tiny-bert", task="planted", seed=0, epochs=2, batch_size=8, pooling="mean", lr=3e-3, head_lr=1e-2)
GATES = BASE | dict(
    method="gates",
    gate_lr=0.3,
    lam=1.0,
    lam_warmup=0.2,
    objective="params",
    keep=0.6,
    sigma=0.1,
    reg_sigma=0.5,
    bias=True,
    control=True,
    control_every=2,
    control_lam_gain=10.0,
    bucketed=True,
    recovery=0.5,  # the correction acts after 16 steps, so recovery trains (20 steps) from the same rng
)
LORA = BASE | dict(method="lora", lora_r=2, lora_alpha=4, bucketed=False)


def run(cfg, planted, monkeypatch, path=None, kill_at=None):
    """(TrainResult, trainable tensors, controller state, training steps this call took, counted from 0); with
    `kill_at`, the call dies inside step kill_at + 1, a checkpoint written after every step."""
    task, tr, dev = planted
    ctls, steps = [], []

    class Recorded(sc.SparsityController):
        def __post_init__(self):
            super().__post_init__()
            ctls.append(self)

    def step(*a, **k):
        if k["label"] != "recovery":
            if k["step"] == kill_at:
                raise KeyboardInterrupt  # the session ends mid-step
            steps.append(k["step"])
        return TRAIN_STEP(*a, **k)

    monkeypatch.setattr(train_mod, "SparsityController", Recorded)
    monkeypatch.setattr(gatecore.train, "train_step", step)
    torch.manual_seed(123)  # the global RNG: whatever the process drew before must not matter
    model, _ = build_model(cfg, 2)
    res = train(model, cfg, task, tr, dev, 1, "cpu", 4, False, dev, partial=path, partial_every_s=0.0)
    params = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return res, params, ctls[0].state_dict() if ctls else None, steps


def same(a, b):
    res_a, params_a, ctl_a, _ = a
    res_b, params_b, ctl_b, _ = b
    assert params_a.keys() == params_b.keys() and all(torch.equal(params_a[n], params_b[n]) for n in params_a)
    strip = lambda r: {k: v for k, v in dataclasses.asdict(r).items() if k not in TIMINGS}  # noqa: E731
    assert strip(res_a) == strip(res_b) and ctl_a == ctl_b


@pytest.mark.parametrize("cfg", [GATES, LORA], ids=["gates", "lora"])
def test_a_point_killed_mid_training_resumes_to_the_uninterrupted_result(cfg, planted, monkeypatch, tmp_path):
    torch.set_num_threads(1)
    path = tmp_path / "partial" / "point.pt"
    whole = run(cfg, planted, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, planted, monkeypatch, path, kill_at=7)  # inside the last step of epoch 1
    assert torch.load(path, weights_only=True)["step"] == 7
    with pytest.raises(KeyboardInterrupt):
        run(cfg, planted, monkeypatch, path, kill_at=11)  # killed again, mid-epoch 2, after resuming
    assert torch.load(path, weights_only=True)["step"] == 11
    resumed = run(cfg, planted, monkeypatch, path)
    assert resumed[3] == list(range(11, 16))  # it went on from the checkpoint
    same(whole, resumed)
    assert not path.exists() and not list(path.parent.iterdir())  # a finished point leaves no file (nor a tmp)
    if cfg is GATES:  # the case is what it says: the controller moved, the correction acted, recovery trained
        assert (
            whole[2]["integral"] != 0 and whole[0].correction["gates_changed"] > 0 and "recovery" in whole[0].correction
        )


def test_a_partial_file_of_another_config_is_not_used(planted, monkeypatch, tmp_path, capsys):
    torch.set_num_threads(1)
    path = tmp_path / "point.pt"
    with pytest.raises(KeyboardInterrupt):
        run(LORA, planted, monkeypatch, path, kill_at=5)
    other = LORA | {"lr": 1e-3}
    got = run(other, planted, monkeypatch, path)
    assert "not used: written for another config (differs in lr)" in capsys.readouterr().err
    assert got[3] == list(range(16))  # trained from the first step
    same(got, run(other, planted, monkeypatch))
    assert not path.exists()


def test_controller_state_round_trips_as_plain_data():
    a = sc.SparsityController("target", asked=0.3, start=0.0, lam_gain=10.0)
    for s in range(5, 200, 5):
        a.update(s, 1000, got=0.1 + s / 2000)
    state = json.loads(json.dumps(a.state_dict()))  # plain data
    b = sc.SparsityController("target", asked=0.3, start=0.0, lam_gain=10.0)
    b.load_state_dict(state)
    assert b == a and b.state_dict() == a.state_dict()
    for s in range(200, 400, 5):
        assert a.update(s, 1000, got=0.2) == b.update(s, 1000, got=0.2) and b == a
    c = sc.SparsityController("target", asked=0.4, start=0.0, lam_gain=10.0)
    before = c.state_dict()
    with pytest.raises(ValueError, match="other settings: asked"):
        c.load_state_dict(state)
    with pytest.raises(ValueError, match="keys"):
        c.load_state_dict({k: v for k, v in state.items() if k != "integral"})
    with pytest.raises(ValueError, match="knob must be a number"):
        c.load_state_dict(before | {"knob": "0.5"})
    assert c.state_dict() == before  # refused: unchanged


def test_a_sweep_killed_mid_point_resumes_it_to_the_same_record(folder, tmp_path, monkeypatch):
    """Through the runner: the point's file lives under <checkpoint-dir>/partial/, the rerun resumes it, and the
    record is the uninterrupted one's (but timings and where it was written)."""
    torch.set_num_threads(1)
    flags = (
        "--methods",
        "gates",
        "--no-compress",
        "--epochs",
        "2",
        "--no-extend-grids",
        "--threads",
        "1",
        "--partial-every",
        "1e-9",
    )
    whole_out, out = tmp_path / "a" / "runs.jsonl", tmp_path / "b" / "runs.jsonl"
    sweep.main(argv(folder, whole_out, *flags))

    def dies(*a, **k):
        if k["step"] == 6:
            raise KeyboardInterrupt  # mid-epoch 2 of 5 steps each
        return TRAIN_STEP(*a, **k)

    monkeypatch.setattr(gatecore.train, "train_step", dies)
    with pytest.raises(KeyboardInterrupt):
        sweep.main(argv(folder, out, *flags))
    files = list((out.parent / "ck" / "partial").iterdir())
    assert len(files) == 1 and torch.load(files[0], weights_only=True)["step"] == 6
    monkeypatch.setattr(gatecore.train, "train_step", TRAIN_STEP)
    sweep.main(argv(folder, out, *flags))
    assert not files[0].exists()
    varies = {"command", "date", "train_time_s", "step_time_s", "peak_mem_mb", "checkpoint"}
    (a,), (b,) = read_jsonl(whole_out), read_jsonl(out)
    assert {k: v for k, v in a.items() if k not in varies} == {k: v for k, v in b.items() if k not in varies}
    off = sweep.parse_args(argv(folder, out, *flags[:-1], "0"))
    assert runner.partial_path(off, "x", {}) is None  # --partial-every 0: no partial checkpoints


@pytest.mark.parametrize("bad", [-1.0, float("nan"), "600"])
def test_a_bad_partial_interval_is_refused_naming_the_flag(bad):
    with pytest.raises(ConfigError, match="--partial-every"):
        SweepConfig(model="tiny-bert", partial_every=bad)
