"""Figures (a)-(d) and the GLUE table (e) on a fixture of records written here, never committed as results."""

import json
import random

import pytest

from analysis.finetune.figures import make_figures
from analysis.finetune.plotting import kept_fractions, module_type
from analysis.finetune.results import load_protocols
from analysis.finetune.stats import claim_check
from analysis.finetune.tables import glue_table
from analysis.provenance import append_jsonl

TASKS = {"SST-2": "accuracy", "MRPC": "f1", "STS-B": "pearson"}
NAMES = (
    "attention.self.query",
    "attention.self.key",
    "attention.self.value",
    "attention.output.dense",
    "intermediate.dense",
    "output.dense",
)


def fake_record(task, method, seed, keep=None, bias=True, lam=1.0, rng=None):
    """A record in the runner's format with made-up numbers (the figures must not care where they come from)."""
    rng = rng or random.Random(0)
    cfg = {
        "model": "all-MiniLM-L6-v2",
        "task": task,
        "method": method,
        "seed": seed,
        "lr": 1e-3,
        "epochs": 1,
        "batch_size": 32,
        "max_len": 64,
        "train_examples": 256,
        "pooling": "mean",
    }
    gated = method.startswith("gates")
    if gated:
        cfg.update(objective="target", keep=keep, lam=lam, lam_warmup=0.1, sigma=0.1, reg_sigma=0.5, bias=bias)
    base = {"head": 60, "bias": 70, "lora": 80, "full": 82}.get(method, 78 - 20 * (0.7 - (keep or 0.7)))
    dev = base + rng.uniform(-1, 1)
    layers = [
        {
            "name": f"bert.encoder.layer.{i}.{n}",
            "out_features": 8,
            "in_features": 4,
            "rows_kept": rng.randint(2, 8),
            "cols_kept": rng.randint(1, 4),
        }
        for i in range(2)
        for n in NAMES
    ]
    removed = (1 - (keep or 1.0)) * 1.1 if gated else 0.0
    return {
        "run_id": f"{task}-{method}-{keep}-{bias}-{lam}-{seed}",
        "command": "python -m analysis.finetune --fake",
        "config": cfg,
        "seed": seed,
        "device": "cpu",
        "threads": 2,
        "date": "2026-01-01",
        "small_mode": False,
        "task_info": {"metric": TASKS[task], "n_train": 200, "n_val": 56, "n_dev": 100, "num_labels": 2},
        "dev": {TASKS[task]: dev / 100},
        "dev_main": dev,
        "val_main": dev,
        "hp_search": None,
        "params": {
            "gate": 1000 if gated else 0,
            "lora": 500 * (method == "lora"),
            "bias": 100,
            "head": 770,
            "other_trainable": 0,
            "frozen": 22_000_000,
            "total": 22_000_000,
            "trainable": {"head": 770, "bias": 870, "lora": 1370, "full": 22_000_000}.get(method, 1870),
        },
        "removed_fraction": removed,
        "layers": layers if gated else None,
        "curve": [{"step": s, "dev_main": dev * s / 30, "loss": 1.0 / s} for s in (10, 20, 30)],
        "compressed": {"params_total": 20_000_000, "dev_main": dev, "speedup_cpu": 1.0 + removed} if gated else None,
        "train_time_s": 1.0,
        "step_time_s": 0.1,
        "peak_mem_mb": 100.0,
        "checkpoint": None,
    }


@pytest.fixture
def results(tmp_path):
    rng = random.Random(1)
    path = tmp_path / "results" / "finetune" / "cpu.jsonl"
    for task in TASKS:
        for seed in (0, 1):
            for method in ("head", "bias", "lora", "full"):
                append_jsonl(path, fake_record(task, method, seed, rng=rng))
            for keep in (0.9, 0.7, 0.5):
                append_jsonl(path, fake_record(task, "gates", seed, keep, rng=rng))
            append_jsonl(path, fake_record(task, "gates", seed, 0.7, bias=False, rng=rng))
    return tmp_path / "results"


def test_make_figures_draws_everything(results, tmp_path):
    made = make_figures(results, tmp_path / "figures")
    names = sorted(p.name for p in made)
    assert names == [
        "finetune_cpu_curves.png",
        "finetune_cpu_layers.png",
        "finetune_cpu_params.png",
        "finetune_cpu_tradeoff.png",
        "glue_table.md",
    ]
    for p in made:
        assert p.stat().st_size > 1000, p


def test_glue_table_numbers(results):
    (p,) = load_protocols(results)
    assert len(p.records) == 3 * 2 * 8
    table = glue_table(p)
    rows = {
        tuple(c.strip() for c in line.strip("|").split("|")[:2]): line
        for line in table.splitlines()[2:]
        if line.startswith("| ")
    }
    assert set(rows) == {
        ("trivial (constant prediction)", "–"),
        ("head", "–"),
        ("bias", "–"),
        ("lora", "–"),
        ("full", "–"),
        ("gates", "0.9"),
        ("gates", "0.7"),
        ("gates", "0.5"),
        ("gates (no bias)", "0.7"),
    }
    lora = [r for r in p.records if r["config"]["method"] == "lora" and r["config"]["task"] == "MRPC"]
    m = sum(r["dev_main"] for r in lora) / 2
    sd = abs(lora[0]["dev_main"] - lora[1]["dev_main"]) / 2**0.5
    assert f"{m:.1f} ± {sd:.1f}" in rows[("lora", "–")]
    avg = p.glue_average("lora")
    by_seed = [
        sum(r["dev_main"] for r in p.records if r["config"]["method"] == "lora" and r["seed"] == s) / 3 for s in (0, 1)
    ]
    assert avg.dev == pytest.approx(by_seed)
    assert "1.33x" in rows[("gates", "0.7")]  # speedup 1 + 0.3 * 1.1 in the fixture


def test_claim_check_picks_the_best_gates_with_30_percent_removed(results):
    (p,) = load_protocols(results)
    c = claim_check(p)
    # fixture: removed = 1.1 * (1 - keep), so keep 0.7 (33%) qualifies and keep 0.9 / 0.8 do not
    candidates = {label: p.glue_average(label, 0.7).mean() for label in ("gates", "gates (no bias)")}
    assert c.gate_keep == 0.7 and c.gate_dev == max(candidates.values())
    assert c.lora == p.glue_average("lora").mean() and c.bias == p.glue_average("bias").mean()
    assert c.within_gap == (c.gate_dev >= c.lora - 1.0) and c.beats_bias == (c.gate_dev > c.bias)
    assert "vs LoRA" in str(c)


def test_rerun_record_replaces_and_varying_setting_gets_a_label(results):
    path = results / "finetune" / "cpu.jsonl"
    first = json.loads(path.read_text().splitlines()[0])
    append_jsonl(path, {**first, "dev_main": 99.0})
    append_jsonl(path, fake_record("SST-2", "gates", 0, 0.7, lam=5.0))
    (p,) = load_protocols(results)
    assert p.cell(first["config"]["task"], "head").dev.count(99.0) == 1
    assert "gates lam=5.0" in p.labels and "gates lam=1.0" in p.labels


def test_heatmap_grid_and_module_types():
    assert module_type("bert.encoder.layer.3.attention.self.query") == (3, "query")
    assert module_type("bert.encoder.layer.0.attention.output.dense") == (0, "attn out")
    assert module_type("bert.encoder.layer.5.output.dense") == (5, "ffn down")
    assert module_type("model.layers.2.mlp.up_proj") == (2, "ffn up")
    recs = [fake_record("SST-2", "gates", s, 0.7, rng=random.Random(s)) for s in (0, 1)]
    names, n_layers, grid = kept_fractions(recs)
    assert n_layers == 2 and names[:2] == ["query rows", "query cols"]
    want = sum(r["layers"][6]["rows_kept"] / 8 for r in recs) / 2  # layer 1 query rows
    assert grid[0, 1] == pytest.approx(want)


def test_torn_last_line_is_skipped(results):
    path = results / "finetune" / "cpu.jsonl"
    with open(path, "a") as f:
        f.write('{"run_id": "torn", "config": {')  # what a killed writer leaves
    (p,) = load_protocols(results)
    assert len(p.records) == 3 * 2 * 8


def test_no_records_skips_cleanly(tmp_path, capsys):
    assert make_figures(tmp_path / "results", tmp_path / "figures") == []
    assert "no records" in capsys.readouterr().out
    assert not (tmp_path / "figures").exists()


def test_convergence_check_curves_kurtosis_maps_and_plateau_table(tmp_path):
    """A convergence-check-like fixture: long curves, plain and kurtosis-weighted gates -> (d), (f), plateau table."""
    from analysis.finetune.curves import plot_curves, plot_kurtosis_layers, write_plateau_table
    from analysis.finetune.results import Protocol, group

    rng, recs = random.Random(2), []
    for task in ("SST-2", "MRPC"):
        for seed in (0, 1):
            for method, tau in (("lora", None), ("gates", None), ("gates", 100.0)):
                r = fake_record(task, method, seed, 0.7 if method == "gates" else None, rng=rng)
                if tau is not None:
                    r["config"]["kurtosis_tau"] = tau
                r["curve"] = [
                    {
                        "step": 10 * i,
                        "dev_main": 70 + min(i, 5),
                        "loss": 1.0,
                        **({"removed_fraction": 0.06 * min(i, 5)} if method == "gates" else {}),
                    }
                    for i in range(1, 9)
                ]
                recs.append(r)
    p = Protocol("convergence-check", tmp_path / "convergence-check.jsonl", recs, group(recs))
    for path in (
        plot_curves(p, tmp_path / "curves.png", {"SST-2": 50.9, "MRPC": 81.2}),
        plot_kurtosis_layers(p, tmp_path / "kurtosis_layers.png"),
    ):
        assert path.stat().st_size > 1000
    text = write_plateau_table(p, tmp_path / "plateau.md").read_text()
    # the curve reaches 75 at step 50 and stays; the fixture's 80 steps are 1 epoch
    assert "| SST-2 | gates (kurtosis tau=100) keep 0.7 | 2 | 8 | 80 | 75.0 | 50 (0.62 ep) | 50 (0.62 ep) |" in text
