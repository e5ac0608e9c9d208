"""Hessian operator and spectra on float64 tiny models (gatecore.hessian)."""

import numpy as np
import pytest
import torch
from torch import nn

from gatecore import Gate, add_gates, add_lora
from gatecore.hessian import HessianOperator, deflated, exact, lanczos, pyhessian, saturated_gates, saturated_mask, slq
from gatecore.hessian.crosscheck import LossModule
from gatecore.pooling import pooled_loss
from gatecore.tiny import tiny_batch, tiny_model

GATE_TARGETS = [r"layer\.1\.attention\.self\.value"]  # n = 16 + 16


def _labelled(model, seed=0):
    b = tiny_batch(model, batch=4, seq=6, seed=seed)
    b["labels"] = torch.tensor([0, 1, 1, 0])
    return b


def gate_operator(noise_draws=0, mean=0.0, kind="bert"):
    model = tiny_model(kind, dtype=torch.float64)
    add_gates(
        model,
        targets=GATE_TARGETS if kind == "bert" else [r"layers\.1\.self_attn\.v_proj"],
        init_mean=mean,
        init_std=0.3,
    )
    batches = [_labelled(model)] if noise_draws else [_labelled(model), _labelled(model, 1)]  # a list of batches, too
    return HessianOperator(model, batches, "gates", pooled_loss("cls"), noise_draws=noise_draws)


def lora_operator():
    model = tiny_model("bert", dtype=torch.float64)
    add_lora(model, targets=[r"layer\.1\.attention\.self\.value"], r=2)  # n = 2 * (16 + 16)
    with torch.no_grad():  # B != 0: away from LoRA's init
        for m in model.modules():
            if hasattr(m, "lora_B"):
                m.lora_B.normal_(0, 0.3)
    return HessianOperator(model, [_labelled(model)], "lora", pooled_loss("mean"))


def _flat_loss(op):
    module = LossModule(op)
    names = [f"inner.{n}" for n, _ in op.named]
    shapes = [p.shape for p in op.params]

    def f(flat):
        parts = [t.view(s) for t, s in zip(flat.split([s.numel() for s in shapes]), shapes)]
        return torch.func.functional_call(module, dict(zip(names, parts)), (None,))

    return f


def func_hessian(op):
    """torch.func.hessian of the same loss as a function of the flat parameter vector."""
    return torch.func.hessian(_flat_loss(op))(op.param_vector().clone())


def fd_hessian(op, eps=1e-5):
    """Central differences of first-order gradients: independent of any double backward."""
    f, x = _flat_loss(op), op.param_vector().clone()
    grad = lambda y: torch.autograd.grad(f(y.requires_grad_(True)), y)[0]  # noqa: E731
    cols = [(grad(x + eps * e) - grad(x - eps * e)) / (2 * eps) for e in torch.eye(op.n, dtype=x.dtype)]
    H = torch.stack(cols, 1)
    return (H + H.T) / 2


def reference_hessian(op):
    """torch.func.hessian where the forward allows functorch transforms; the fused gated linear
    (a custom autograd.Function without setup_context) does not, so there: finite differences."""
    try:
        return func_hessian(op), 1e-9
    except RuntimeError:
        return fd_hessian(op), 1e-6


@pytest.fixture(scope="module", params=["gates_noise", "gates_eval", "lora"])
def op_and_H(request):
    op = {
        "gates_noise": lambda: gate_operator(noise_draws=3),
        "gates_eval": lambda: gate_operator(0),
        "lora": lora_operator,
    }[request.param]()
    return (op, *reference_hessian(op))


def test_hvp_equals_exact_hessian_times_v(op_and_H):
    op, H, rtol = op_and_H
    assert H.abs().max() > 0
    v = torch.randn(op.n, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(op.matvec(v), H @ v, rtol=rtol, atol=rtol * 1e-3 * H.abs().max().item())
    V = torch.randn(op.n, 5, dtype=torch.float64)
    torch.testing.assert_close(op.matmat(V), H @ V, rtol=rtol, atol=rtol * 1e-3 * H.abs().max().item())


def test_finite_difference_reference_agrees_with_torch_func():
    op = lora_operator()
    H = func_hessian(op)
    torch.testing.assert_close(fd_hessian(op), H, rtol=1e-6, atol=1e-9 * H.abs().max().item())


def test_products_are_deterministic_and_counted():
    op = gate_operator(noise_draws=3)
    v = torch.randn(op.n, dtype=torch.float64)
    a, b = op.matvec(v), op.matvec(v)
    assert torch.equal(a, b) and op.products == 2
    assert all(g.fixed_eps is None and not g.training for g in op.model.modules() if isinstance(g, Gate))
    # a fresh operator with the same seed builds the same loss; another seed draws other noise
    assert torch.equal(gate_operator(noise_draws=3).matvec(v), a)


def test_exact_and_lanczos_extremes_match_eigvalsh(op_and_H):
    op, H, rtol = op_and_H
    ev = torch.linalg.eigvalsh(H).numpy()
    ex = exact(op, chunk=16, progress=False)
    assert ex.extra["asymmetry"] < 1e-10 and ex.products == op.n
    scale = np.abs(ev).max()
    np.testing.assert_allclose(ex.eigenvalues, ev, atol=rtol * scale)
    lz = lanczos(op, progress=False)
    assert (
        abs(lz.lambda_max - ex.eigenvalues.max()) < 1e-7 * scale
        and abs(lz.lambda_min - ex.eigenvalues.min()) < 1e-7 * scale
    )
    assert 0 < lz.products < 2 * op.n


def test_pyhessian_top_eigenvalue_trace_and_density(op_and_H):
    op, H, _ = op_and_H
    ev = torch.linalg.eigvalsh(H).numpy()
    top = ev[np.argmax(np.abs(ev))]
    has_eig = hasattr(torch, "eig")
    rep = pyhessian(op, power_tol=1e-6, max_iter=500, trace_probes=40, density_steps=20)
    assert abs(rep.extra["largest_magnitude"] - top) <= 1e-3 * abs(top)  # power iteration: largest |eigenvalue|
    assert (rep.lambda_max if top > 0 else rep.lambda_min) == rep.extra["largest_magnitude"]  # the end it found
    assert (rep.lambda_min if top > 0 else rep.lambda_max) is None
    assert abs(rep.trace - ev.sum()) <= 5 * rep.trace_stderr + 1e-9 and rep.extra["trace_probes"] == 40
    nodes = np.asarray(rep.density["nodes"][0])
    assert nodes.min() >= ev.min() - 1e-6 * abs(top) and nodes.max() <= ev.max() + 1e-6 * abs(top)
    assert hasattr(torch, "eig") == has_eig and torch.get_default_dtype() == torch.float32  # patches undone


def test_slq_brackets_spectrum_and_estimates_trace():
    op = lora_operator()
    ev = torch.linalg.eigvalsh(func_hessian(op)).numpy()
    rep = slq(op, steps=op.n, probes=2, progress=False)  # full Lanczos: Ritz values are eigenvalues
    assert (
        abs(rep.lambda_max - ev.max()) < 1e-8 * abs(ev).max() and abs(rep.lambda_min - ev.min()) < 1e-8 * abs(ev).max()
    )
    assert abs(rep.trace - ev.sum()) <= 5 * rep.trace_stderr + 1e-9 and rep.counts_estimated


class Quadratic(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.d, self.w = d, nn.Parameter(torch.ones(len(d), dtype=torch.float64))

    def loss(self, batch):
        return 0.5 * (self.d * self.w**2).sum() * batch["scale"]


def test_kappa_eff_of_a_known_diagonal_quadratic():
    d = torch.tensor([10.0, 2.0, 0.5, 1e-9, 0.0, 0.0, -1.0], dtype=torch.float64)
    model = Quadratic(d)
    op = HessianOperator(model, [{"scale": torch.ones(1)}], [r"^w$"], lambda m, b: m.loss(b))
    rep = exact(op, tol=1e-6, progress=False)
    assert (rep.lambda_max, rep.lambda_min, rep.n_negative, rep.n_zero, rep.n_active) == (10.0, -1.0, 1, 3, 3)
    assert rep.kappa_eff == pytest.approx(20.0, rel=1e-12)  # 10 / 0.5: the zeros and -1 are not divided by
    pd = Quadratic(torch.tensor([4.0, 3.0, 2.0, 0.25], dtype=torch.float64))
    lz = lanczos(HessianOperator(pd, [{"scale": torch.ones(1)}], [r"^w$"], lambda m, b: m.loss(b)), progress=False)
    assert lz.kappa_eff == pytest.approx(16.0, rel=1e-8)


@pytest.mark.parametrize("draws", [0, 2])
def test_zero_count_equals_saturated_gates(draws):
    model = tiny_model("bert", dtype=torch.float64)
    layer = add_gates(model, targets=[r"layer\.1\.attention\.self\.value"], init_mean=0.0, init_std=0.1)
    gate = next(iter(layer.values()))
    with torch.no_grad():  # 3 open at 1, 2 shut at 0: clamped whatever the noise (sigma 0.1)
        gate.row_gate.theta[[0, 5, 9]] = 3.0
        gate.col_gate.theta[[2, 7]] = -3.0
    op = HessianOperator(model, [_labelled(model)], "gates", pooled_loss("cls"), noise_draws=draws)
    rep = exact(op, progress=False)
    assert saturated_gates(op) == 5 and rep.n_zero == 5 and rep.n == 32
    # lanczos / slq on the 27 active coordinates, the 5 exact zeros added back
    lz = deflated("lanczos", op, saturated_mask(op), progress=False)
    scale = np.abs(rep.eigenvalues).max()
    assert abs(lz.lambda_max - rep.lambda_max) < 1e-8 * scale and abs(lz.lambda_min - rep.lambda_min) < 1e-8 * scale
    sl = deflated("slq", op, saturated_mask(op), steps=27, probes=2, progress=False)
    assert sl.n == 32 and sl.n_zero >= 5 and sl.extra["deflated_saturated"] == 5  # + estimated |lambda| <= 1e-3 max


def test_exact_refuses_large_n_and_bad_subsets():
    op = gate_operator()
    with pytest.raises(ValueError, match="max_n"):
        exact(op, max_n=op.n - 1)
    with pytest.raises(ValueError, match="selects no parameter"):
        HessianOperator(tiny_model("bert"), [_labelled(tiny_model("bert"))], "lora")
    with pytest.raises(ValueError, match="n="):
        op.matvec(torch.ones(op.n + 1))


def test_products_to_accuracy_counts_the_arpack_lanczos_the_cli_runs():
    from gatecore.hessian import products_to_accuracy

    op = lora_operator()
    ev = torch.linalg.eigvalsh(func_hessian(op)).numpy()
    top = ev[np.argmax(np.abs(ev))]
    out = products_to_accuracy(op, float(top), eps=(1e-2, 1e-6), max_steps=60)
    for row in out["rows"]:
        assert row["arpack_products"] > 0 and row["arpack_rel_err"] <= 10 * row["eps"]
        assert row["ratio"] is None or row["ratio"] == row["arpack_products"] / row["power_products"]
    assert out["cli_lanczos_products_both_ends"] > 0
