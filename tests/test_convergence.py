"""Issue 5: the planted problems, the expected-objective estimators and the convergence run; the study
configured in Python (no argv) in small mode."""

import json
import math
from dataclasses import asdict, fields, replace

import pytest
import torch

from analysis.convergence import plots, study
from analysis.convergence.config import ConvergenceConfig
from analysis.convergence.planted import (
    ObjectiveSpec,
    censored_moments,
    closed_form_loss,
    expected_objective,
    gated_layer,
    gated_student,
    lora_optimum,
    lora_student,
    make_problem,
    mc_losses,
)

SMALL = ConvergenceConfig(m=16, n=16, hidden=16, samples=128, seeds=1, steps=600, evals=25, polish_iters=60, draws=64)


def _random_gates(student, seed=0):
    """Gates spread over open, closed and partial so every branch of the clamp matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for gate in gated_layer(student).gates():
            gate.theta.copy_(torch.empty(gate.n, dtype=gate.theta.dtype).uniform_(-1.5, 1.5, generator=g))
    return student


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0])
def test_censored_moments_match_sampling(sigma):
    u = torch.linspace(-0.6, 1.6, 12, dtype=torch.float64)
    z = torch.clamp(
        u + sigma * torch.randn(200_000, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(1)), 0, 1
    )
    m1, m2 = censored_moments(u, sigma)
    for exact, s in ((m1, z), (m2, z * z)):
        se = s.std(0) / math.sqrt(s.shape[0])
        assert ((exact - s.mean(0)).abs() <= 5 * se + 1e-12).all()


@pytest.mark.parametrize("kind", ["linear", "lowrank"])
def test_closed_form_agrees_with_monte_carlo(kind):
    p = make_problem(kind, m=12, n=10, samples=64, noise=0.2, seed=3)
    for sigma in (0.1, 0.5):
        s = _random_gates(gated_student(p, sigma, None))
        exact = float(closed_form_loss(s, p.X, p.Y).detach())
        losses = mc_losses(s, p.X, p.Y, draws=20_000, seed=7).detach()
        se = float(losses.std()) / math.sqrt(losses.numel())
        assert abs(exact - float(losses.mean())) < 4 * se, (exact, float(losses.mean()), se)


def test_mc_estimator_within_its_stated_error_of_brute_force():
    p = make_problem("mlp", m=8, n=10, hidden=12, samples=64, seed=2)
    s = _random_gates(gated_student(p, 0.2, None))
    F, se = expected_objective(s, p, ObjectiveSpec(draws=256, mc_seed=1))
    brute = mc_losses(s, p.X, p.Y, draws=40_000, seed=99).detach()
    se_b = float(brute.std()) / math.sqrt(brute.numel())
    assert se > 0
    assert abs(float(F.detach()) - float(brute.mean())) < 4 * math.hypot(se, se_b)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_batched_draws_equal_library_forward(kind):
    """mc_losses evaluates K draws at once; each must equal GatedLinear.forward with that fixed_eps."""
    p = make_problem(kind, m=6, n=5, hidden=7, samples=9, seed=0)
    s = _random_gates(gated_student(p, 0.3, None))
    batched = mc_losses(s, p.X, p.Y, draws=3, seed=5)
    g = torch.Generator().manual_seed(5)
    gates = gated_layer(s).gates()
    eps = [torch.randn(3, 1, gate.n, generator=g, dtype=torch.float64) for gate in gates]
    s.train()
    for k in range(3):
        for gate, e in zip(gates, eps):
            gate.fixed_eps = e[k, 0]
        one = ((s(p.X) - p.Y) ** 2).mean()
        assert torch.allclose(one, batched[k], rtol=1e-12, atol=1e-14)
    for gate in gates:
        gate.fixed_eps = None


def test_lora_optimum_is_a_lower_bound_and_reached():
    p = make_problem("lowrank", m=10, n=8, samples=64, noise=0.1, rank=2, seed=4)
    best = lora_optimum(p, r=2)
    s = lora_student(p, r=2, alpha=2)
    got = study.polish(s, p, ObjectiveSpec(), iters=300)
    assert best <= got + 1e-12
    assert got - best < 1e-8


@pytest.mark.parametrize("problem", ["linear", "mlp"])
def test_gates_recover_planted_support_and_gap_falls(problem):
    tr = study.train(replace(SMALL, problem=problem), seed=0, method="gates", progress=False)
    s = study.summarize([tr])
    assert tr.precision[-1] >= 0.95 and tr.recall[-1] >= 0.95
    assert tr.binary[-1] == 1.0
    assert s["rates"][0]["decades_total"] >= 2.0  # orders of magnitude
    assert tr.planted_polished["precision"] == 1.0 and tr.planted_polished["recall"] == 1.0


def test_too_large_lam_closes_needed_gates():
    """lam above ~2 (the data cost of a needed gate vs its penalty) must close planted-open gates too."""
    tr = study.train(replace(SMALL, lam=5.0, steps=300), seed=0, method="gates", progress=False)
    assert tr.precision[-1] < 0.5 and tr.recall[-1] == 1.0


def test_help_documents_every_option(capsys):
    with pytest.raises(SystemExit):
        study.build_parser().parse_args(["--help"])
    out = capsys.readouterr().out
    for f in fields(ConvergenceConfig):
        assert "--" + f.name.replace("_", "-") in out
        assert f.metadata["help"][:20] in out.replace("\n", " ").replace("  ", " ")


def test_study_configured_in_python_sweeps_and_writes(tmp_path, monkeypatch):
    """A sweep built in Python (as notebook 01 does), small settings, no argv: one group per value, each
    recording its config as the CLI's results do; the file carries provenance; the summary table reads it."""
    monkeypatch.setenv("GATECORE_SMALL", "1")
    cfg = replace(SMALL, methods="gates", steps=60, evals=6, polish_iters=10, draws=16)
    res = study.run(cfg, sweep="lam", values=[0.0, 0.1], progress=False)
    assert [g["value"] for g in res["groups"]] == [0.0, 0.1]
    assert [g["config"] for g in res["groups"]] == [asdict(replace(cfg, lam=v)) for v in (0.0, 0.1)]
    path = study.write(cfg, res, tmp_path / "convergence" / "linear_lam.json", sweep="lam")
    rec = json.loads(path.read_text())
    assert rec["config"] == asdict(cfg) and rec["seed"] == [0] and rec["small_mode"] is True
    assert set(rec["groups"][0]["methods"]) == {"gates"} and "lam" in study.summary_table(tmp_path)


def test_bad_arguments_are_refused():
    with pytest.raises(SystemExit):
        study.main(["--sweep", "sigma"])  # --values missing
    with pytest.raises(ValueError, match="problem kind"):
        make_problem("conv")
    with pytest.raises(ValueError, match="optimizer"):
        study.train(replace(SMALL, optimizer="rmsprop"), 0, "gates", progress=False)


def test_cli_writes_results_and_figures(tmp_path):
    base = [
        "--m",
        "8",
        "--n",
        "8",
        "--samples",
        "32",
        "--seeds",
        "2",
        "--steps",
        "40",
        "--evals",
        "8",
        "--polish-iters",
        "10",
        "--no-progress",
    ]
    study.main(base + ["--out", str(tmp_path / "convergence" / "linear.json")])
    study.main(
        base
        + [
            "--methods",
            "gates",
            "--sweep",
            "sigma",
            "--values",
            "0.1",
            "0.3",
            "--out",
            str(tmp_path / "convergence" / "linear_sigma.json"),
        ]
    )
    res = json.loads((tmp_path / "convergence" / "linear.json").read_text())
    assert res["command"].startswith("python") and res["config"]["steps"] == 40 and "versions" in res
    assert set(res["groups"][0]["methods"]) == {"gates", "lora"}
    made = plots.make_figures(tmp_path, tmp_path / "fig")
    assert {p.name for p in made} == {
        "convergence_gap.png",
        "convergence_grad_pl.png",
        "convergence_gate_trajectories.png",
        "convergence_recovery.png",
        "convergence_rates.png",
        "convergence_lojasiewicz.png",
    }
    assert all(p.stat().st_size > 10_000 for p in made)
