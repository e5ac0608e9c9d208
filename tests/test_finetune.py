"""analysis.finetune: tiny sweeps write valid records, resume when killed, compress exactly, run from Python."""

import pytest
import torch

import gatecore as gc
from analysis.finetune import runner, sweep
from analysis.finetune.config import DEFAULT_CHECKPOINTS, SweepConfig, expand, resolve, run_id
from analysis.finetune.encoding import encode, evaluate
from analysis.finetune.train import build_model
from analysis.provenance import ROOT, read_jsonl

CONTRACT = [
    "run_id",
    "command",
    "config",
    "seed",
    "versions",
    "device",
    "threads",
    "date",
    "small_mode",
    "task_info",
    "dev",
    "dev_main",
    "val_main",
    "hp_search",
    "params",
    "removed_fraction",
    "layers",
    "curve",
    "compressed",
    "train_time_s",
    "step_time_s",
    "peak_mem_mb",
    "checkpoint",
]
CONFIG = ["model", "task", "method", "seed", "lr", "epochs", "batch_size", "max_len", "train_examples", "pooling"]
GATE_CONFIG = ["objective", "keep", "lam", "lam_warmup", "sigma", "reg_sigma", "bias"]


def argv(folder, out, *extra):
    return [
        "--model",
        "tiny-bert",
        "--tasks",
        "csv",
        "--data",
        str(folder),
        "--text-cols",
        "text",
        "--label-col",
        "label",
        "--epochs",
        "3",
        "--batch-size",
        "16",
        "--max-len",
        "16",
        "--val-examples",
        "16",
        "--curve-points",
        "2",
        "--out",
        str(out),
        "--checkpoint-dir",
        str(out.parent / "ck"),
        "--quiet",
        *extra,
    ]


def test_tiny_sweep_writes_contract_records_and_compresses_exactly(folder, tmp_path):
    out = tmp_path / "runs.jsonl"
    sweep.main(
        argv(
            folder,
            out,
            "--methods",
            "lora",
            "gates",
            "--lr",
            "1e-3",
            "3e-3",
            "--gate-lr",
            "0.5",
            "--keep",
            "0.5",
            "--no-bias-keep",
            "0.5",
            "--curve-dev-examples",
            "10",
            "--no-extend-grids",
        )
    )
    recs = read_jsonl(out)
    assert [r["config"]["method"] for r in recs] == ["lora", "gates", "gates"]
    for r in recs:
        assert not [k for k in CONTRACT if k not in r]
        assert not [k for k in CONFIG if k not in r["config"]]
        assert r["task_info"]["n_dev"] == 40 and r["dev_main"] == r["dev"]["accuracy"]
        if r["config"].get("bias") is False:  # without biases the lr has nothing to train
            assert r["hp_search"] is None and r["grid"]["status"]["lr"] == "fixed"
            continue
        assert [h["lr"] for h in r["hp_search"]] == [1e-3, 3e-3] and r["grid"]["tried"]["lr"] == [1e-3, 3e-3]
        assert r["val_main"] == max(h["val_main"] for h in r["hp_search"])  # chosen on val
        assert r["config"]["lr"] == next(h["lr"] for h in r["hp_search"] if h["val_main"] == r["val_main"])
        assert r["curve"][-1]["step"] == r["steps"] and r["run_id"] == run_id(r["spec"])
        assert r["spec"]["bucketed"] is True and "kurtosis_tau" not in r["spec"]
        # the curve is scored on a 10-example dev subset (accuracy in steps of 10 points), the end on all 40
        assert all(abs(p["dev_main"] / 10 - round(p["dev_main"] / 10)) < 1e-9 for p in r["curve"])
    table = sweep.summary(recs).splitlines()
    assert len(table) == 4 and f"{recs[1]['dev_main']:.1f}" in table[2]
    lora, gates, no_bias = recs
    assert lora["compressed"] is None and lora["params"]["lora"] > 0 and lora["removed_fraction"] == 0.0
    assert not [k for k in GATE_CONFIG if k not in gates["config"]]
    assert gates["config"]["bias"] and not no_bias["config"]["bias"] and no_bias["params"]["bias"] == 0
    c = gates["compressed"]
    assert gates["removed_fraction"] > 0.1 and c["params_total"] < c["params_dense"]
    for g in (gates, no_bias):  # the sparsity contract: the eval gates remove what was asked, within 2 points
        assert g["removed_asked"] == 0.5 and g["removed_got"] == g["removed_fraction"]
        assert abs(g["removed_got"] - g["removed_asked"]) <= 0.02
        assert {"gates_changed", "removed_before", "removed_after", "gates_total", "changed_fraction"} <= set(
            g["correction"]
        )
        assert g["correction"]["removed_after"] == g["removed_got"]
    assert c["dev_main"] == gates["dev_main"] and c["dev"] == gates["dev"] and c["matches_gated"]
    # the checkpoint re-creates the gated model on a fresh tiny model, with the same dev predictions
    fresh, _ = build_model({**gates["config"], "method": "head"}, 2)
    gc.load_trainable(
        fresh, ROOT / gates["checkpoint"] if not gates["checkpoint"].startswith("/") else gates["checkpoint"]
    )
    from analysis.data import load_task

    task = load_task("csv", data_dir=folder, text_cols=["text"], label_col="label")
    enc = encode(None, task.dev, 16, fresh.config.vocab_size)
    assert evaluate(fresh, enc, task, "mean", fresh.config.pad_token_id, "cpu") == gates["dev"]


def test_killed_sweep_resumes_without_duplicates_or_losses(folder, tmp_path, monkeypatch):
    out = tmp_path / "runs.jsonl"
    args = argv(
        folder,
        out,
        "--methods",
        "head",
        "bias",
        "gates",
        "--seeds",
        "0",
        "1",
        "--no-compress",
        "--epochs",
        "1",
        "--no-extend-grids",
    )
    real, calls = runner.run_one, []

    def dies_on_third(spec, cfg, device, progress=True, prior=None, points_file=None):
        calls.append(spec)
        if len(calls) == 3:
            raise KeyboardInterrupt  # the runner is killed while the third run is in flight
        return real(spec, cfg, device, progress, prior, points_file)

    monkeypatch.setattr(runner, "run_one", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        sweep.main(args)
    assert len(read_jsonl(out)) == 2
    with open(out, "a") as f:
        f.write('{"run_id": "torn')  # a writer killed mid-line
    monkeypatch.setattr(runner, "run_one", real)
    sweep.main(args)
    ids = [r["run_id"] for r in read_jsonl(out)]
    expected = {run_id(s) for s in expand(sweep.parse_args(args))}
    assert len(ids) == len(set(ids)) == 6 and set(ids) == expected
    before = out.read_text()
    sweep.main(args)  # everything done: nothing is rerun
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
    from gatecore.pooling import pooled_logits

    ids = torch.tensor([[5, 6, 7, 1, 1]])
    full = pooled_logits(
        model.eval(), {"input_ids": ids[:, :3], "attention_mask": torch.ones(1, 3, dtype=torch.long)}, "mean"
    )
    padded = pooled_logits(model, {"input_ids": ids, "attention_mask": torch.tensor([[1, 1, 1, 0, 0]])}, "mean")
    assert torch.allclose(full, padded, atol=1e-6)


def test_small_mode_never_writes_into_results(monkeypatch):
    monkeypatch.setenv("GATECORE_SMALL", "1")
    cfg = sweep.parse_args(["--protocol", "cpu-converged"])
    assert cfg.train_examples == 32 and cfg.epochs == 1
    assert not cfg.out.resolve().is_relative_to(ROOT / "results") and not cfg.checkpoint_dir.startswith(
        DEFAULT_CHECKPOINTS
    )
    monkeypatch.delenv("GATECORE_SMALL")
    cfg = sweep.parse_args(["--protocol", "cpu-converged", "--tasks", "RTE", "--epochs", "2"])  # explicit options win
    assert cfg.tasks == ("RTE",) and cfg.epochs == 2 and cfg.objective == "target"  # the protocol's, not the default
    assert cfg.out == ROOT / "results" / "finetune" / "cpu-converged.jsonl"
    assert cfg == resolve(
        SweepConfig.of_protocol("cpu-converged", tasks=("RTE",), epochs=2)
    )  # the same config, built in Python


def test_non_finite_loss_stops_the_run_with_a_clear_error(folder):
    from analysis.data import load_task
    from analysis.finetune.train import train

    task = load_task("csv", data_dir=folder, text_cols=["text"], label_col="label")
    cfg = dict(model="tiny-bert", task="csv", method="head", seed=0, epochs=1, batch_size=16, pooling="mean", lr=1e-3)
    model, _ = build_model(cfg, 2)
    with torch.no_grad():
        gc.find_head(model)[1].weight.fill_(float("nan"))
    enc = encode(None, task.train, 16, model.config.vocab_size)
    with pytest.raises(FloatingPointError, match="non-finite loss nan at step 1/.* of csv/head"):
        train(model, cfg, task, enc, None, 1, "cpu", progress=False)


@pytest.mark.skipif(not hasattr(gc, "track_input_means"), reason="gatecore.track_input_means does not exist yet")
def test_kurtosis_tau_passes_through_only_when_set(folder, tmp_path):
    plain = expand(sweep.parse_args(argv(folder, tmp_path / "o.jsonl", "--methods", "gates")))
    assert "kurtosis_tau" not in plain[0]  # other run ids do not change
    with pytest.raises(ValueError, match="target"):  # the kurtosis weighting reshapes the `target` objective only
        sweep.parse_args(argv(folder, tmp_path / "o.jsonl", "--kurtosis-tau", "100", "--objective", "params"))
    with pytest.raises(ValueError, match="target"):  # the same check on a config built in Python
        SweepConfig(kurtosis_tau=100.0, objective="params")
    cfg = sweep.parse_args(
        argv(
            folder,
            tmp_path / "o.jsonl",
            "--methods",
            "gates",
            "--objective",
            "target",
            "--kurtosis-tau",
            "100",
            "--epochs",
            "1",
            "--no-compress",
        )
    )
    spec = expand(cfg)[0]
    assert spec["kurtosis_tau"] == 100 and run_id(spec) != run_id(plain[0])
    model, _ = build_model({**spec, "lr": 1e-3, "lam": 1.0, "gate_lr": 0.5}, 2)
    assert all(m.track_input_mean for m in gc.gated_layers(model).values())
    rec = runner.run_one(spec, cfg, "cpu", progress=False)
    assert rec["config"]["kurtosis_tau"] == 100 and abs(rec["removed_got"] - rec["removed_asked"]) <= 0.02


def test_named_protocols_plan_what_the_issue_asks():
    cfg = sweep.parse_args(["--protocol", "cpu-converged"])
    specs = expand(cfg)
    assert cfg.workers == 2 and cfg.threads == 1 and cfg.out.name == "cpu-converged.jsonl"
    from analysis.finetune.protocols import CONVERGED_EPOCHS, grid_size

    assert {grid_size(s) for s in specs} == {2}  # the same lr (or gate-lr) grid size for every method
    assert cfg.grid_on_first_seed and all(bool(s.get("grid_source")) == (s["seed"] > 0) for s in specs)
    for task in ["SST-2", "MRPC", "RTE", "CoLA", "STS-B"]:
        t = [s for s in specs if s["task"] == task]

        def seeds(m, t=t, **kw):
            return sorted(s["seed"] for s in t if s["method"] == m and all(s.get(k) == v for k, v in kw.items()))

        assert seeds("bias") == seeds("lora") == [0, 1, 2] and seeds("full") == seeds("head") == [0]
        assert seeds("gates", keep=0.7, bias=True) == seeds("gates", keep=0.6, bias=True) == [0, 1, 2]
        assert seeds("gates", keep=0.7, bias=False) == [0]
        assert {s["epochs"] for s in t} == {CONVERGED_EPOCHS[task]}
        assert {s["train_examples"] for s in t} == {20000 if task == "SST-2" else None}
    assert len(specs) == 5 * 15
    c = expand(sweep.parse_args(["--protocol", "convergence-check"]))
    from analysis.finetune.protocols import PROTOCOLS

    epochs = PROTOCOLS["convergence-check"]["task_epochs"]
    assert len(c) == 2 * 3 * 4 and {(s["task"], s["epochs"]) for s in c} == set(epochs.items())
    assert {s["objective"] for s in c if s["method"] == "gates"} == {"target"}  # gates vs kurtosis: weighting only
    kurt = [s for s in c if "kurtosis_tau" in s]
    assert len(kurt) == 6 and all(s["objective"] == "target" and s["kurtosis_tau"] == 100 for s in kurt)
    assert sweep.parse_args(["--protocol", "convergence-check"]).curve_points == 12
    fair = sweep.parse_args(["--protocol", "cpu-fair"])
    f = expand(fair)
    assert fair.extend_grids and fair.split_range and fair.recovery > 0 and fair.reuse == ("cpu-converged",)
    gates = [s for s in f if s["method"] == "gates"]
    assert {tuple(s["gate_lr_grid"]) for s in gates if s["seed"] == 0 and s["keep"] == 0.7 and s["bias"]} == {
        (0.01, 0.03, 0.1, 0.3)
    }
    assert all(len(s["lr_grid"]) == 2 for s in gates if s["seed"] == 0 and s["bias"])  # the biases' lr is searched too
    assert not [s for s in f if s["method"] == "gates+lora"]  # left to cpu-fair-rc
    marked = [s for s in f if s["seed"] == 0 and "grid_source" in s]  # 40% and no-bias train the 30% choice
    assert len(marked) == 8 and all(
        (s | s["grid_source"])["keep"] == 0.7 and (s | s["grid_source"])["bias"] for s in marked
    )
    assert {s["keep"] for s in gates if s["seed"] > 0} == {0.7}  # gates-other-keeps: 40% on the first seed only


@pytest.mark.parametrize("name", ["cpu-converged", "convergence-check", "cpu-fair", "cpu-fair-long", "cpu-fair-rc"])
def test_committed_records_keep_the_run_ids_their_protocol_expands_to(name):
    """Every committed record is a run of its protocol as the code expands it today (no run id drifted)."""
    from analysis.finetune.config import inherit_choices, take_choices

    path = ROOT / "results" / "finetune" / f"{name}.jsonl"
    recs = read_jsonl(path)
    if not recs:
        pytest.skip(f"{path.name} has no records yet")
    specs = expand(cfg := sweep.parse_args(["--protocol", name]))
    if cfg.choices_from:  # these runs train the lrs another protocol's first seeds chose
        source = read_jsonl(path.with_name(f"{cfg.choices_from}.jsonl"))
        specs, _ = take_choices(specs, [r for r in source if not runner.needs_search(r)], cfg.choices_for)
    ready, _, _ = inherit_choices(specs, recs)
    assert {r["run_id"] for r in recs} <= {run_id(s) for s in ready}


def test_later_seeds_train_the_grid_point_the_first_seed_chose(folder, tmp_path):
    out = tmp_path / "runs.jsonl"
    args = argv(
        folder,
        out,
        "--methods",
        "bias",
        "gates",
        "--seeds",
        "0",
        "1",
        "--lr",
        "1e-3",
        "3e-2",
        "--gate-lr",
        "0.1",
        "0.5",
        "--keep",
        "0.6",
        "--epochs",
        "1",
        "--no-compress",
        "--grid-on-first-seed",
        "--no-extend-grids",
    )
    sweep.main(args + ["--max-runs", "1"])  # cut short: the later seeds wait, nothing half-done
    assert len(read_jsonl(out)) == 1
    sweep.main(args)  # the rest: the second first-seed run, then (second wave) both later seeds
    recs = read_jsonl(out)
    first = {r["config"]["method"]: r for r in recs if r["seed"] == 0}
    later = {r["config"]["method"]: r for r in recs if r["seed"] == 1}
    assert len(recs) == 4 and set(first) == set(later) == {"bias", "gates"}
    for m, r in later.items():
        f = first[m]
        assert len(f["hp_search"]) > 1 and r["hp_search"] is None and r["spec"]["grid_from"] == f["run_id"]
        assert (r["config"]["lr"], r["config"].get("gate_lr")) == (f["config"]["lr"], f["config"].get("gate_lr"))
        assert r["run_id"] == run_id(r["spec"]) and "grid_source" not in r["spec"]
    before = out.read_text()
    sweep.main(args)  # everything done: nothing is rerun
    assert out.read_text() == before


def test_sweep_configured_in_python_runs_in_small_mode(folder, tmp_path, monkeypatch):
    """The study's config built directly (as the notebooks and the GPU driver do), small mode, no argv."""
    from analysis.finetune import config

    monkeypatch.setenv("GATECORE_SMALL", "1")
    monkeypatch.setattr(config, "SMALL_DIR", tmp_path / "small")
    cfg = SweepConfig(
        model="tiny-bert",
        tasks=("csv",),
        data=str(folder),
        text_cols=("text",),
        label_col="label",
        methods=("head", "gates"),
        keep=(0.6,),
        batch_size=16,
        max_len=16,
        curve_points=1,
        bench=False,
        quiet=True,
    )
    out = sweep.run_sweep(cfg)
    assert out == tmp_path / "small" / "runs.jsonl"
    recs = {r["run_id"]: r for r in read_jsonl(out)}
    specs = expand(resolve(cfg))
    assert len(specs) == 2 and {run_id(s) for s in specs} <= set(recs)
    for s in specs:
        r = recs[run_id(s)]
        assert r["task_info"]["n_train"] <= 32 and r["config"]["epochs"] == 1 and r["command"].startswith("python")
    gates = next(recs[run_id(s)] for s in specs if s["method"] == "gates")
    assert gates["compressed"]["matches_gated"] and abs(gates["removed_got"] - 0.4) <= 0.02
