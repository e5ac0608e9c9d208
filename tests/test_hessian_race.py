"""The optimization race (analysis.hessian.race) on a tiny random BERT with MiniLM's tokenizer: same start, same
batches, the lr pick, steps to a threshold, and the table / figure drawn from the record alone."""

import dataclasses
import json
import math

import pytest
import torch

from analysis.hessian.race.batches import batch_order
from analysis.hessian.race.config import FIGURE, RaceConfig
from analysis.hessian.race.loop import eval_loss
from analysis.hessian.race.pick import criterion, pick_lr, spread, steps_to, steps_to_stay
from analysis.hessian.race.report import make_figures, table
from analysis.hessian.race.study import Study, analyze


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny random BertForSequenceClassification saved with MiniLM's tokenizer (so setup.build loads it)."""
    from transformers import AutoTokenizer

    from gatecore.pretrained import local_model_dir
    from gatecore.tiny import tiny_model

    d = tmp_path_factory.mktemp("tiny-bert")
    tiny_model("bert", vocab_size=30522, pad_token_id=0).save_pretrained(d)
    AutoTokenizer.from_pretrained(local_model_dir()).save_pretrained(d)
    return str(d)


def _cfg(tiny_dir, **kw):
    base = dict(
        model=tiny_dir,
        task="synthetic",
        train_examples=40,
        eval_examples=16,
        batch=8,
        steps=6,
        warmup=2,
        eval_every=2,
        gate_lrs=(0.1, 1.0),
        lora_lrs=(1e-3, 3e-2),
        seeds=(0, 1),
        thresholds=(0.69, 0.6, -1.0),
    )
    return RaceConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def record(tiny_dir):
    torch.set_num_threads(1)
    return analyze(_cfg(tiny_dir), log=lambda s: None)


@pytest.mark.parametrize("head", ["frozen", "joint"])
def test_both_methods_start_from_the_same_loss(tiny_dir, head):
    study = Study(_cfg(tiny_dir, head=head))
    for seed in (0, 1):
        g, l = (eval_loss(study.start(p, seed), study.eval_set, study.loss_fn) for p in ("gates-all", "lora-qv"))
        assert g == pytest.approx(l, abs=1e-6)
        if head == "frozen":  # the shared pre-fitted head: the same start for every seed too
            assert g == pytest.approx(eval_loss(study.start("lora-qv", 0), study.eval_set, study.loss_fn), abs=1e-6)


def test_record_same_start_and_same_batches_per_seed(record):
    runs = record["runs"]
    assert record["setting"]["same_batches_per_seed"]
    for seed in (0, 1):
        mine = [r for r in runs if r["seed"] == seed]
        assert {r["adapters"] for r in mine} == {"gates-all", "lora-qv"}
        assert len({r["batch_digest"] for r in mine}) == 1
        assert max(r["eval_loss"][0] for r in mine) - min(r["eval_loss"][0] for r in mine) < 1e-6
    assert len({r["batch_digest"] for r in runs}) == 2  # another seed, another order
    assert all(r["steps"] == [0, 2, 4, 6] and len(r["train_loss"]) == 6 for r in runs if not r["diverged_at"])


def test_batch_order_is_a_permutation_per_epoch():
    order = batch_order(10, steps=5, batch=4, seed=3)  # 20 examples: two epochs of 10
    flat = [int(i) for b in order for i in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    assert [b.tolist() for b in batch_order(10, 5, 4, 3)] == [b.tolist() for b in order]
    assert [b.tolist() for b in batch_order(10, 5, 4, 4)] != [b.tolist() for b in order]


def test_best_lr_is_the_grid_point_with_the_lowest_criterion(record):
    for preset, s in record["summary"].items():
        grid = {float(k): (math.inf if v is None else v) for k, v in s["grid_criterion"].items()}
        assert s["best_lr"] == min(grid, key=grid.get)
        at_best = [r for r in record["runs"] if r["adapters"] == preset and r["phase"] == "seed"]
        assert at_best and all(r["lr"] == s["best_lr"] for r in at_best)
        assert s["seeds"] == [0, 1]
    assert pick_lr({0.1: 0.5, 0.3: 0.2, 1.0: math.inf, 3.0: None}) == 0.3
    assert pick_lr({0.1: 0.2, 0.3: 0.2}) == 0.1
    with pytest.raises(ValueError):
        pick_lr({0.1: math.inf})
    assert criterion({"eval_loss": [0.7, 0.1], "diverged_at": 5}) == math.inf


def test_steps_to_threshold_on_a_synthetic_curve():
    steps = [0, 10, 20, 30, 40]
    loss = [0.7, 0.55, 0.5, None, 0.3]
    assert steps_to(steps, loss, 0.6) == 10
    assert steps_to(steps, loss, 0.5) == 20  # at the level counts
    assert steps_to(steps, loss, 0.45) == 40  # a missing point is skipped
    assert steps_to(steps, loss, 0.7) == 0
    assert steps_to(steps, loss, 0.2) is None
    s = spread([10, 20, None])
    assert s["n"] == 2 and s["mean"] == 15 and s["std"] == pytest.approx(math.sqrt(50))


def test_summary_table_and_figure_from_the_record(record, tmp_path):
    s = record["summary"]["gates-all"]["steps_to"]
    assert (
        s["-1"]["reached"] == 0 and s["-1"]["mean"] is None and s["-1"]["stays_below"]["reached"] == 0
    )  # never reached
    assert s["0.69"]["of"] == 2
    rec = {**record, "config": dataclasses.asdict(_cfg("tiny")), "command": "python -m analysis.hessian.race"}
    md = table(rec, str(tmp_path / "hessian" / "race_x.json"))
    assert "not reached (0/2); stays: not reached (0/2)" in md and "| gates-all |" in md and "| lora-qv |" in md
    (tmp_path / "hessian").mkdir()
    (tmp_path / "hessian" / "race_x.json").write_text(json.dumps(rec))
    made = make_figures(tmp_path, tmp_path)
    assert [p.name for p in made] == [FIGURE] and made[0].stat().st_size > 0
    assert (tmp_path / "hessian" / "race_x.md").read_text() == md


def test_steps_to_stay_below_ignores_a_dip():
    steps = [0, 10, 20, 30, 40]
    assert steps_to_stay(steps, [0.7, 0.4, 0.8, 0.45, 0.3], 0.5) == 30  # the dip at 10 does not count
    assert steps_to(steps, [0.7, 0.4, 0.8, 0.45, 0.3], 0.5) == 10
    assert steps_to_stay(steps, [0.7, 0.4, 0.3, 0.2, 0.6], 0.5) is None  # ends above
    assert steps_to_stay(steps, [0.7, 0.4, None, 0.2, 0.1], 0.5) == 30  # a missing point breaks the run
