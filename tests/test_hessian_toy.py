"""The analytic toy (analysis.hessian.toy) and the `python -m analysis.hessian` command line."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.func import hessian

from analysis.hessian import toy as T
from analysis.hessian.setup import read_task
from analysis.hessian.study import main, parser


@pytest.fixture(scope="module")
def problem():
    return T.make_problem()


def test_gate_hessian_closed_form_matches_autograd(problem):
    theta = 0.3 * torch.randn(
        problem.W0.shape[0] + problem.W0.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(1)
    )
    theta[[0, 8]] = torch.tensor([3.0, -3.0], dtype=torch.float64)  # one saturated open, one saturated shut
    H = T.gate_hessian(theta, problem)
    torch.testing.assert_close(H, hessian(lambda t: T.gate_loss(t, problem))(theta), rtol=1e-10, atol=1e-12)
    assert H[0].abs().max() == 0 and H[8].abs().max() == 0  # saturated gate: exactly zero row


@pytest.mark.parametrize("scale", [1.0, 8.0])
def test_lora_hessian_closed_form_matches_autograd(problem, scale):
    theta = torch.randn(T.RANK * sum(problem.W0.shape), dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    H = T.lora_hessian(theta, problem, T.RANK, scale)
    torch.testing.assert_close(
        H, hessian(lambda t: T.lora_loss(t, problem, T.RANK, scale))(theta), rtol=1e-10, atol=1e-10
    )


def test_lora_init_has_a_zero_A_block_and_symmetry_zeros_at_a_fit(problem):
    r, d_in = T.RANK, problem.W0.shape[1]
    theta0 = torch.cat(
        [torch.randn(r * d_in, dtype=torch.float64), torch.zeros(r * problem.W0.shape[0], dtype=torch.float64)]
    )
    assert T.lora_hessian(theta0, problem)[: r * d_in, : r * d_in].abs().max() == 0  # B = 0: L does not see A
    fitted = T.fit(lambda t: T.lora_loss(t, problem), theta0 + 0.1)
    H, D = T.lora_hessian(fitted, problem), T.lora_symmetry_directions(fitted, problem)
    assert (H @ D).norm() <= 1e-6 * H.norm() * D.norm()  # the r^2 GL(r) directions are flat
    ev = torch.linalg.eigvalsh(H)
    assert int((ev.abs() <= 1e-8 * ev.abs().max()).sum()) == r * r


def test_toy_spectra_counts(problem):
    out = T.toy_spectra(n_saturated=3)
    assert out["gates_fit"]["n_zero"] == 1  # the (c z_r, z_c / c) rescaling, nothing else
    assert out["gates_fit_3_saturated"]["n_zero"] == 3  # one zero row per saturated gate
    assert out["lora_fit"]["n_zero"] == T.RANK**2
    assert out["lora_init"]["n_negative"] > 0 and out["gates_fit"]["n_negative"] == 0
    assert max(abs(e) for e in out["gates_paper_init"]["eigenvalues"]) == 0  # theta = 1: every eval gate clamped


# ---- command line ------------------------------------------------------------------------------------------


def test_help_documents_every_option():
    ap = parser()
    text = ap.format_help()
    for action in ap._actions:
        assert action.help, f"option {action.option_strings} has no help"
        for flag in action.option_strings:
            assert flag in text
    for flag in (
        "--model",
        "--task",
        "--method",
        "--checkpoint",
        "--examples",
        "--spectrum",
        "--dtype",
        "--seed",
        "--out",
    ):
        assert flag in text


def test_read_task_glue_and_synthetic():
    texts, labels, k = read_task("CoLA", 5, seed=0)
    assert len(texts) == 5 and set(labels) <= {0, 1} and k == 2
    other, _, _ = read_task("CoLA", 5, seed=0, skip=5)
    assert not set(texts) & set(other)
    t, y, _ = read_task("synthetic", 8, seed=1)
    assert len(t) == 8 and all(
        lab == int(any(w in s[0].split() for w in ("good", "great", "fine"))) for s, lab in zip(t, y)
    )


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, minilm):
    """A tiny random BERT with the MiniLM tokenizer: a local model folder the CLI can load fast."""
    from gatecore.tiny import tiny_model

    path = tmp_path_factory.mktemp("tinybert")
    tiny_model("bert", vocab_size=minilm[1].vocab_size).save_pretrained(path)
    minilm[1].save_pretrained(path)
    return path


def test_cli_runs_all_spectra_with_training_and_checkpoint(tiny_dir, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert (
        main(
            [
                "--model",
                str(tiny_dir),
                "--task",
                "synthetic",
                "--examples",
                "6",
                "--targets",
                r"layer\.1\.attention\.self\.value",
                "--spectrum",
                "all",
                "--slq-steps",
                "8",
                "--slq-probes",
                "2",
                "--train-steps",
                "3",
                "--save-checkpoint",
                str(tmp_path / "c.pt"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    rec = json.loads(out.read_text())
    assert rec["command"].startswith("python -m analysis.hessian") and rec["setting"]["state"].startswith("trained")
    assert {r["method"] for r in rec["reports"]} == {"exact", "lanczos", "slq", "pyhessian"}
    assert rec["setting"]["n"] == 32 and len(rec["eigenvalues"]["exact"]) == 32 and rec["setting"]["pooling"] == "mean"
    from analysis.hessian.plots import make_figures
    from analysis.hessian.tables import summary_table

    (tmp_path / "results" / "hessian").mkdir(parents=True)
    (tmp_path / "results" / "hessian" / "r.json").write_text(out.read_text())
    made = make_figures(tmp_path / "results", tmp_path / "figs")
    assert [p.name for p in made] == [
        "hessian_densities.png",
        "hessian_conditioning.png",
        "hessian_kappa_curves.png",
    ] and all(p.stat().st_size for p in made)
    assert "exact" in summary_table(tmp_path / "results")
    # reloading the saved checkpoint gives the same operator, so the same spectrum
    out2 = tmp_path / "r2.json"
    main(
        [
            "--model",
            str(tiny_dir),
            "--task",
            "synthetic",
            "--examples",
            "6",
            "--spectrum",
            "exact",
            "--checkpoint",
            str(tmp_path / "c.pt"),
            "--out",
            str(out2),
        ]
    )
    assert json.loads(out2.read_text())["eigenvalues"]["exact"] == pytest.approx(
        rec["eigenvalues"]["exact"], rel=1e-9, abs=1e-15
    )


def test_cli_clear_errors(tiny_dir, tmp_path, capsys):
    from gatecore import add_gates, mark_trainable, save_trainable
    from gatecore.tiny import tiny_model

    base = ["--model", str(tiny_dir), "--task", "synthetic", "--examples", "4", "--out", str(tmp_path / "x.json")]
    with pytest.raises(SystemExit):
        main([*base[:2], "--task", "MNLI-unknown"])
    assert "unknown task 'MNLI-unknown'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*base, "--spectrum", "exact", "--max-exact-n", "10"])
    assert "too large for --spectrum exact" in capsys.readouterr().err
    other = tiny_model("bert", num_hidden_layers=3)  # a layer the CLI's model does not have
    add_gates(other, targets=[r"layer\.2\.attention\.self\.value"])
    mark_trainable(other)
    save_trainable(other, tmp_path / "other.pt")
    with pytest.raises(SystemExit):
        main([*base, "--checkpoint", str(tmp_path / "other.pt")])
    assert "does not match the model" in capsys.readouterr().err
    same = tiny_model("bert", vocab_size=30522)
    add_gates(same, targets=[r"layer\.1\.attention\.self\.value"])
    mark_trainable(same)
    save_trainable(same, tmp_path / "gates.pt")
    with pytest.raises(SystemExit):
        main([*base, "--method", "lora", "--checkpoint", str(tmp_path / "gates.pt")])
    assert "has no lora layers, but the analysed method is lora" in capsys.readouterr().err


def test_cli_presets_penalty_weight_scaling_and_temporary_checkpoint(tiny_dir, tmp_path, capsys):
    from dataclasses import replace

    from analysis.hessian.study import HessianConfig, analyze, config_from_args, to_argv

    base = HessianConfig(
        model=str(tiny_dir),
        task="synthetic",
        examples=6,
        noise_draws=2,
        spectrum=("lanczos", "slq"),
        slq_steps=8,
        slq_probes=2,
    )
    assert config_from_args(parser().parse_args(to_argv(base))) == base  # the recorded command gives the config back
    gates = analyze(replace(base, adapters="gates-all", penalty="target", train_steps=2), progress=False)
    s = gates["setting"]
    assert s["checkpoint"].startswith("temporary, not kept") and s["penalty"]["objective"] == "target"
    assert s["training"]["steps"] == 2 and s["loss"].endswith("+ sparsity penalty") and len(s["matrices"]) == 12
    cond = gates["conditioning"]["slq"]
    assert len(cond["curve"]["tols"]) == 8 and cond["estimated"] and gates["flat_vs_draws"]["draws"][-1] == 256
    matched = analyze(replace(base, adapters="matched"), progress=False)
    assert matched["setting"]["n"] == s["n"] and matched["setting"]["lora_r"] == 1  # LoRA r=1 on the same matrices
    w = analyze(replace(base, adapters="lora-qv", precondition="weight"), progress=False)
    assert (
        w["setting"]["precondition"] and w["setting"]["deflated"] == w["setting"]["n"] // 2
    )  # A at B = 0 moves no weight
    out = capsys.readouterr().out
    assert "s/product" in out and "expected ~" in out


def test_full_set_table_and_figure_compare_gates_and_lora(tiny_dir, tmp_path):
    from dataclasses import replace

    from analysis.hessian.plots import make_figures
    from analysis.hessian.study import HessianConfig, run
    from analysis.hessian.tables import curve_points, dominance, full_table

    res = tmp_path / "results" / "hessian"
    res.mkdir(parents=True)
    base = HessianConfig(
        model=str(tiny_dir),
        task="synthetic",
        examples=6,
        noise_draws=2,
        spectrum=("lanczos", "slq"),
        slq_steps=12,
        slq_probes=2,
    )
    for preset in ("gates-all", "lora-qv"):
        for w in ("none", "weight"):
            run(replace(base, adapters=preset, precondition=w, out=str(res / f"{preset}_{w}.json")), progress=False)
    for f in res.glob("*.json"):  # label them as the full sweep's runs (60 SLQ steps)
        rec = json.loads(f.read_text())
        next(r for r in rec["reports"] if r["method"] == "slq")["extra"]["steps"] = 60
        f.write_text(json.dumps(rec))
    table = full_table(tmp_path / "results")
    assert table.count("synthetic") == 4  # one verdict per parametrization
    assert sum(table.count(v) for v in ("gates lower at all", "LoRA lower at all", "cross: gates lower at")) == 2
    g = json.loads((res / "gates-all_none.json").read_text())
    pts = curve_points(g)
    assert len(pts) == 14 and dominance(pts, pts) == (0, 0, sum(np.isfinite(v) for v in pts.values()))
    made = make_figures(tmp_path / "results", tmp_path / "figs")
    assert made[-1].name == "hessian_full_sets.png" and made[-1].stat().st_size
    assert (res / "full_sets.md").read_text().startswith("# Full adapter sets")


def test_compare_skips_done_runs_and_missing_checkpoints(monkeypatch, tmp_path, capsys):
    from analysis.hessian import compare

    ran = []
    monkeypatch.setattr(compare, "run", lambda cfg: ran.append(cfg.out))
    (tmp_path / "SST-2_gates-all_seed0.pt").write_bytes(b"")
    assert compare.main(["--part", "full", "--skip-done", "--checkpoints", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "SST-2_lora1all_S60_converged_seed0: skipped, no checkpoint" in out
    assert all(("converged" not in o) or "SST-2_gatesall" in o and "seed0" in o for o in ran)
    assert not any(Path(o).name == "SST-2_gatesall_K8_S60_init_seed0.json" for o in ran)  # committed: skipped
