"""Issue 13: tolerance-free measures, SLQ / Lanczos against a planted spectrum, the expected gate loss,
the weight-change scaling, flat directions vs draws (gatecore.hessian)."""

import numpy as np
import pytest
import torch
from torch import nn

from analysis.hessian import toy as T
from gatecore import GatedLinear, LoRALinear, sparsity_penalty
from gatecore.hessian import (
    HessianOperator,
    conditioning,
    deflated,
    flat_vs_draws,
    lanczos,
    mass_kappa,
    pyhessian,
    report_conditioning,
    saturated_mask,
    slq,
    tolerance_curve,
    top_k_kappa,
    weight_metric_diagonal,
    weight_scaled,
)


class Planted:
    """H = Q diag(d) Q^T with Q a product of 4 Householder reflections: a pure linear-algebra operator."""

    def __init__(self, d, seed=0):
        g = np.random.default_rng(seed)
        self.d = np.asarray(d, dtype=np.float64)
        self.n, self.dtype, self.device, self.products = self.d.size, torch.float64, torch.device("cpu"), 0
        self.U = [u / np.linalg.norm(u) for u in g.standard_normal((4, self.n))]

    def _q(self, v, order):
        for u in order:
            v = v - 2 * u * (u @ v)
        return v

    def matvec(self, v):
        self.products += 1
        v = np.asarray(v, dtype=np.float64).ravel()
        return torch.from_numpy(self._q(self.d * self._q(v, self.U[::-1]), self.U))


def planted_spectrum(n=3000, neg=150, zero=600, kappa=1e2, seed=0):
    """neg negatives in [-0.3, -0.05], `zero` exact zeros, positives log-uniform in [1/kappa, 1] (ends included)."""
    g = np.random.default_rng(seed)
    pos = np.exp(g.uniform(np.log(1 / kappa), 0, n - neg - zero))
    pos[:2] = [1.0, 1 / kappa]
    return np.concatenate([-g.uniform(0.05, 0.3, neg), np.zeros(zero), pos])


def test_lanczos_extremes_and_slq_counts_match_the_planted_spectrum():
    d = planted_spectrum()  # positives in [1e-2, 1]: a gap above SLQ's zero tolerance 1e-3
    op = Planted(d)
    lz = lanczos(op, progress=False)
    assert lz.lambda_max == pytest.approx(1.0, rel=1e-8) and lz.lambda_min == pytest.approx(d.min(), rel=1e-8)
    rep = slq(op, steps=60, probes=6, progress=False)
    assert rep.n_negative == pytest.approx(150, abs=0.02 * op.n)  # n * mass: ~1% of n per probe
    assert rep.n_zero == pytest.approx(600, abs=0.03 * op.n)  # the zero node also takes some of the smallest positives
    c = report_conditioning(rep, ends=lz)
    exact = conditioning(d)
    assert exact.curve.kappa[exact.curve.tols.index(1e-4)] == pytest.approx(1e2, rel=1e-9)
    i = c.curve.tols.index(1e-1)
    assert c.curve.n_active[i] == pytest.approx(exact.curve.n_active[i], abs=0.05 * op.n)
    k = c.matched.ks.index(256)  # top-k kappa from the density within a factor 2 of the exact one
    assert 0.5 < c.matched.kappa_top[k] / exact.matched.kappa_top[k] < 2


def test_matched_set_kappas_on_a_hand_made_spectrum():
    ev = [8.0, 4.0, 2.0, 1.0, 1e-4, 0.0, 0.0, -0.5]
    assert top_k_kappa(ev, ks=(1, 2, 4, 5, 6, 9)) == (1.0, 2.0, 8.0, 8e4, None, None)
    kap, k = mass_kappa(ev, fractions=(0.5, 0.8, 0.99, 1.0))  # positive mass 15.0001
    assert k == (1.0, 3.0, 4.0, 5.0) and kap == (1.0, 4.0, 8.0, pytest.approx(8e4))
    curve = tolerance_curve(ev, tols=(1e-6, 1e-3, 0.2))
    assert curve.kappa == (pytest.approx(8e4), 8.0, 4.0) and curve.n_active == (5.0, 4.0, 3.0)
    assert curve.n_zero == (2.0, 3.0, 5.0) and curve.n_negative == (1.0, 1.0, 0.0)
    # counts: the same spectrum as a density (value, multiplicity) gives the same numbers
    w = conditioning([8.0, 4.0, 2.0, 1.0, 1e-4, 0.0, -0.5], [1, 1, 1, 1, 1, 2, 1], source="SLQ")
    assert w.estimated and w.matched.kappa_top == conditioning(ev).matched.kappa_top and w.n == 8


def _unit(sigma=0.3, seed=0, mean=0.0):
    torch.manual_seed(seed)
    gl = GatedLinear(nn.Linear(5, 4).double(), sigma=sigma, init_mean=mean, init_std=0.6)
    g = torch.Generator().manual_seed(seed)
    X, Y = torch.randn(30, 5, generator=g, dtype=torch.float64), torch.randn(30, 4, generator=g, dtype=torch.float64)
    return gl, X, Y


def _sq(m, b):
    return ((m(b["x"]) - b["y"]) ** 2).mean()


def test_many_draw_loss_converges_to_the_closed_form_expectation():
    gl, X, Y = _unit()
    exact = T.expected_gate_loss(gl, X, Y).item()
    per = [
        HessianOperator(gl, [{"x": X, "y": Y}], "gates", _sq, noise_draws=1, seed=s).loss().item() for s in range(200)
    ]
    sd = float(np.std(per))
    assert sd > 1e-3  # the noise matters on this unit
    for K in (16, 256, 4096):
        mc = HessianOperator(gl, [{"x": X, "y": Y}], "gates", _sq, noise_draws=K, seed=7).loss().item()
        assert abs(mc - exact) <= 4 * sd / np.sqrt(K), (K, mc, exact)


def test_penalty_is_added_once_to_the_objective():
    gl, X, Y = _unit()
    pen = lambda m: 0.5 * sparsity_penalty(m, "target", 0.3)  # noqa: E731
    a = HessianOperator(gl, [{"x": X, "y": Y}], "gates", _sq, noise_draws=3, penalty=pen).loss()
    b = HessianOperator(gl, [{"x": X, "y": Y}], "gates", _sq, noise_draws=3).loss()
    torch.testing.assert_close(a - b, pen(gl))


def test_flat_directions_vs_draws_match_the_operator_and_expectation():
    gl, X, Y = _unit(sigma=0.1, mean=1.0)  # mu ~ 0.76: mostly clamped at 1
    with torch.no_grad():
        gl.row_gate.theta[:2] = torch.tensor([0.2, -3.0], dtype=torch.float64)  # one open, one shut for good
    fc = flat_vs_draws(gl, draws=(1, 2, 8, 64, 256), seed=3)
    for K, counted in zip(fc.draws, fc.counted):
        op = HessianOperator(gl, [{"x": X, "y": Y}], "gates", _sq, noise_draws=K, seed=3)
        assert int(saturated_mask(op).sum()) == counted
    assert list(fc.counted) == sorted(fc.counted, reverse=True) and fc.counted[-1] >= 1  # the shut gate stays flat
    for c, e in zip(fc.counted, fc.expected):
        assert abs(c - e) <= 3 * np.sqrt(e) + 1
    s = torch.cat([g.mu + 0.5 for g in gl.gates()])
    assert fc.eval_clamped == int(((s <= 0) | (s >= 1)).sum()) and fc.expected[0] > fc.expected[-1]


def test_weight_metric_diagonal_is_diag_of_JtJ():
    gl, X, Y = _unit(sigma=0.2)
    op = HessianOperator(gl, [{"x": X, "y": Y}], "gates", _sq, noise_draws=2, seed=1)

    def dW(theta, draw):  # Delta [W | b] as a function of (theta_r, theta_c) in one draw
        zr = (torch.tanh(theta[:4]) + 0.5 + gl.row_gate.sigma * draw[gl.row_gate]).clamp(0, 1)
        zc = (torch.tanh(theta[4:]) + 0.5 + gl.col_gate.sigma * draw[gl.col_gate]).clamp(0, 1)
        Wb = torch.cat([gl.weight * zc, gl.bias[:, None]], 1) * zr[:, None]
        return (Wb - torch.cat([gl.weight, gl.bias[:, None]], 1)).reshape(-1)

    theta = torch.cat([gl.row_gate.theta, gl.col_gate.theta]).detach()
    J2 = sum(torch.autograd.functional.jacobian(lambda t: dW(t, d), theta) ** 2 for d in op.draws) / 2
    torch.testing.assert_close(weight_metric_diagonal(op), J2.sum(0))
    lo = LoRALinear(nn.Linear(5, 4).double(), r=2, alpha=6)
    with torch.no_grad():
        lo.lora_B.normal_()
    lop = HessianOperator(lo, [{"x": X, "y": Y}], "lora", _sq)
    flat = torch.cat([lo.lora_A.reshape(-1), lo.lora_B.reshape(-1)]).detach()
    J = torch.autograd.functional.jacobian(lambda t: (3.0 * t[10:].view(4, 2) @ t[:10].view(2, 5)).reshape(-1), flat)
    torch.testing.assert_close(weight_metric_diagonal(lop), (J**2).sum(0))


def test_weight_scaled_spectrum_is_invariant_to_rescaling_the_lora_factors():
    """alpha/r and a diagonal reparametrization change H but not D^{-1/2} H D^{-1/2}."""
    g = torch.Generator().manual_seed(0)
    X, Y = torch.randn(30, 5, generator=g, dtype=torch.float64), torch.randn(30, 4, generator=g, dtype=torch.float64)
    spectra = []
    for alpha in (2.0, 16.0):
        torch.manual_seed(0)
        lo = LoRALinear(nn.Linear(5, 4).double(), r=2, alpha=alpha)
        with torch.no_grad():
            lo.lora_B.copy_(torch.randn(4, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) / alpha)
        op = HessianOperator(lo, [{"x": X, "y": Y}], "lora", _sq)
        inner, mask = weight_scaled(op)
        assert not mask.any()
        spectra.append(np.sort(deflated("exact", op, mask, inner=inner, progress=False).eigenvalues))
    np.testing.assert_allclose(spectra[0], spectra[1], atol=1e-10 * np.abs(spectra[0]).max())


def test_pyhessian_fills_the_end_it_found():
    d = torch.tensor([1.0, 0.5, -3.0], dtype=torch.float64)
    model = nn.Module()
    model.w = nn.Parameter(torch.ones(3, dtype=torch.float64))
    op = HessianOperator(model, [{"s": torch.ones(1)}], [r"^w$"], lambda m, b: 0.5 * (d * m.w**2).sum())
    rep = pyhessian(op, power_tol=1e-8, max_iter=300, trace_probes=4, density_steps=3)
    assert rep.lambda_max is None and rep.lambda_min == pytest.approx(-3.0, rel=1e-4)
    assert rep.extra["largest_magnitude"] == rep.lambda_min


def _saturated_unit():
    gl, X, Y = _unit(sigma=0.1, mean=0.0)
    with torch.no_grad():  # clamped at 1 or 0 whatever the noise: flat for the task loss, not for the penalty
        gl.row_gate.theta[[0, 2]] = torch.tensor([2.0, -2.5], dtype=torch.float64)
        gl.col_gate.theta[[1, 3]] = torch.tensor([1.5, -3.0], dtype=torch.float64)
    return gl, X, Y


@pytest.mark.parametrize("kind", ["target", "l0"])
def test_penalty_curvature_of_saturated_gates_is_added_back_exactly(kind):
    from gatecore.hessian import deflated_values, exact

    gl, X, Y = _saturated_unit()
    pen = lambda m: 0.7 * sparsity_penalty(m, kind, 0.3 if kind == "target" else None)  # noqa: E731
    op = HessianOperator(gl, [{"x": X, "y": Y}], "gates", _sq, noise_draws=3, penalty=pen)
    mask = saturated_mask(op)
    assert int(mask.sum()) == 4
    ref = exact(op, progress=False)
    fill = deflated_values(op, mask)
    assert np.abs(fill).min() > 0  # the penalty's curvature: not zero
    ex = deflated("exact", op, mask, fill=fill, progress=False)
    np.testing.assert_allclose(np.sort(ex.eigenvalues), np.sort(ref.eigenvalues), rtol=1e-9, atol=1e-13)
    assert ex.n_negative == ref.n_negative and ex.n_zero == ref.n_zero and ex.n == ref.n
    sl = deflated("slq", op, mask, fill=fill, steps=5, probes=2, progress=False)
    assert sl.extra["deflated_block_counts"]["negative"] == int(
        (fill < -sl.extra["count_tol"] * max(abs(sl.lambda_max), abs(sl.lambda_min))).sum()
    )
    assert sum(sl.extra["deflated_block"]["counts"]) == 4 and report_conditioning(sl).n == pytest.approx(op.n)
    # without the penalty the saturated block is zero, and nothing is computed for it
    plain = HessianOperator(gl, [{"x": X, "y": Y}], "gates", _sq, noise_draws=3)
    assert not deflated_values(plain, saturated_mask(plain)).any() and plain.products == 0


def test_a_coupling_penalty_is_not_deflated():
    from gatecore.hessian import deflated_values

    gl, X, Y = _saturated_unit()
    op = HessianOperator(
        gl, [{"x": X, "y": Y}], "gates", _sq, noise_draws=3, penalty=lambda m: sparsity_penalty(m, "params", 0.3)
    )
    with pytest.raises(ValueError, match="couples the saturated coordinates"):
        deflated_values(op, saturated_mask(op))


def test_as_trained_penalty_from_a_finetuning_checkpoint(tmp_path):
    import json

    from analysis.hessian.penalty import as_trained_penalty

    cfg = {"objective": "target", "lam": 1.0, "keep": 0.7, "reg_sigma": 0.5, "control": True}
    (tmp_path / "x.jsonl").write_text(
        json.dumps({"run_id": "other", "final_keep_target": 0.5})
        + "\n"
        + json.dumps({"run_id": "abc", "final_keep_target": 0.86})
        + "\n"
    )
    spec = as_trained_penalty({"run_id": "abc", "config": cfg}, tmp_path)
    assert spec["lam"] == 1.0 and spec["objective"] == "target" and spec["target"] == pytest.approx(0.14)
    assert spec["reg_sigma"] == 0.5 and spec["kurtosis_tau"] is None and "x.jsonl" in spec["source"]
    l0 = as_trained_penalty({"run_id": "abc", "config": {**cfg, "objective": "l0", "lam": 0.5}}, tmp_path)
    assert l0["target"] is None and l0["lam"] == pytest.approx(0.43)  # l0: the knob multiplies lam
    assert as_trained_penalty({"penalty": {"lam": 2.0}})["lam"] == 2.0  # what --train-steps saves
    with pytest.raises(ValueError, match="no record of finetuning run"):
        as_trained_penalty({"run_id": "zzz", "config": cfg}, tmp_path)
    with pytest.raises(ValueError, match="needs a checkpoint"):
        as_trained_penalty({"run_id": "abc", "config": {"method": "lora"}}, tmp_path)
