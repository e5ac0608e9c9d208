"""Kurtosis-informed weighting of the target-keep penalty: statistics, weights, penalty, recording, errors."""

import math

import numpy as np
import pytest
import scipy.stats
import torch
from gradcheck import theta_gradcheck  # tests/ is on sys.path under pytest
from torch import nn

import gatecore as gc
from gatecore.kurtosis import channel_kurtosis, channel_weights
from gatecore.tiny import tiny_batch, tiny_model

CLOSED_THETA = -1.0  # tanh(-1) = -0.76 < -0.5: eval gate exactly 0


def _np_sqrt_kurtosis(a):
    """sqrt(mean(z^4)) with population z-scores; zero variance -> 0 (written out directly)."""
    a = np.asarray(a, dtype=np.float64)
    s = a.std()
    if s == 0:
        return 0.0
    z = (a - a.mean()) / s
    return math.sqrt(np.mean(z**4))


def _np_softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def _np_weights(W, x_bar, open_rows, open_cols, tau):
    """(w_r, w_c) full length, zeros at closed positions, by loops over rows and columns."""
    A = W * x_bar[None, :]
    rows, cols = np.flatnonzero(open_rows), np.flatnonzero(open_cols)
    k_r = np.array([_np_sqrt_kurtosis(A[i, cols]) for i in rows])
    k_c = np.array([_np_sqrt_kurtosis(A[rows, j]) for j in cols])
    w_r, w_c = np.zeros(W.shape[0]), np.zeros(W.shape[1])
    w_r[rows] = _np_softmax(-k_r / tau)
    w_c[cols] = _np_softmax(-k_c / tau)
    return w_r, w_c, k_r, k_c


def _hand_built():
    """W 6 x 5 with a constant column (zero variance), one outlier row, one closed row and column."""
    W = np.array(
        [
            [0.3, -1.2, 0.5, 2.0, 0.1],
            [-0.7, 0.4, 0.5, -0.2, 0.9],
            [1.1, 0.0, 0.5, 0.3, -0.4],
            [0.2, 0.8, 0.5, -1.5, 0.6],
            [9.0, -0.1, 0.5, 0.2, 0.0],  # an outlier in column 0
            [-0.5, 0.3, 0.5, 0.7, -0.8],
        ]
    )
    x_bar = np.array([0.9, -0.4, 1.3, 0.25, -2.0])
    open_rows = np.array([True, True, False, True, True, True])
    open_cols = np.array([True, True, True, True, False])
    return W, x_bar, open_rows, open_cols


def _t(a, dtype=torch.float64):
    return torch.tensor(a, dtype=dtype if a.dtype != np.bool_ else torch.bool)


@pytest.mark.parametrize("tau", [0.5, 100.0])
def test_weights_match_direct_numpy(tau):
    W, x_bar, open_rows, open_cols = _hand_built()
    w_r_ref, w_c_ref, k_r_ref, k_c_ref = _np_weights(W, x_bar, open_rows, open_cols, tau)
    # the reference itself agrees with scipy's Pearson kurtosis (fisher=False, bias=True) where variance > 0
    A = W * x_bar
    assert np.isclose(k_c_ref[0] ** 2, scipy.stats.kurtosis(A[open_rows, 0], fisher=False, bias=True))
    assert k_c_ref[2] == 0.0  # the constant column

    kappa_r, kappa_c = channel_kurtosis(_t(W), _t(x_bar), _t(open_rows), _t(open_cols))
    np.testing.assert_allclose(kappa_r[open_rows].numpy(), k_r_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(kappa_c[open_cols].numpy(), k_c_ref, rtol=1e-12, atol=1e-14)
    assert (kappa_r[~_t(open_rows)] == 0).all() and (kappa_c[~_t(open_cols)] == 0).all()

    w_r, w_c = channel_weights(_t(W), _t(x_bar), _t(open_rows), _t(open_cols), tau)
    np.testing.assert_allclose(w_r.numpy(), w_r_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(w_c.numpy(), w_c_ref, rtol=1e-12, atol=1e-15)
    assert w_r[2] == 0 and w_c[4] == 0
    assert math.isclose(w_r.sum().item(), 1.0) and math.isclose(w_c.sum().item(), 1.0)
    assert w_c[2] == w_c.max()  # zero kurtosis: the largest weight, so the most penalty
    assert not w_r.requires_grad and not w_c.requires_grad


def test_layer_weights_from_recorded_forward():
    """The model-level weights use the recorded x_bar and the eval gates, and equal the numpy ones."""
    W, _, open_rows, open_cols = _hand_built()
    lin = nn.Linear(5, 6, dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(_t(W))
    model = nn.Sequential(gc.GatedLinear(lin))
    gl = model[0]
    with torch.no_grad():
        gl.row_gate.theta[~_t(open_rows)] = CLOSED_THETA
        gl.col_gate.theta[~_t(open_cols)] = CLOSED_THETA
    x = torch.randn(4, 7, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    gc.track_input_means(model)
    model(x)
    x_bar = x.mean((0, 1)).numpy()
    w_r_ref, w_c_ref, _, _ = _np_weights(W, x_bar, open_rows, open_cols, 100.0)
    ((w_r, w_c),) = gc.kurtosis_weights(model, 100.0).values()
    np.testing.assert_allclose(w_r.numpy(), w_r_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(w_c.numpy(), w_c_ref, rtol=1e-12, atol=1e-15)


def _gated_tiny(seed=0):
    """Float64 tiny BERT, gates everywhere, some rows/columns closed, recording on, one forward done."""
    model = tiny_model("bert", dtype=torch.float64)
    layers = gc.add_gates(model)
    g = torch.Generator().manual_seed(seed)
    for m in layers.values():
        for gate in m.gates():
            with torch.no_grad():
                gate.theta.copy_(torch.empty_like(gate.theta).uniform_(-1.2, 1.2, generator=g))
    gc.track_input_means(model)
    model(**tiny_batch(model))
    return model, layers


def test_fixture_has_closed_gates_and_no_vector_fully_closed():
    _, layers = _gated_tiny()
    gates = [g for m in layers.values() for g in m.gates()]
    closed = [(g.eval_gate() == 0).sum().item() for g in gates]
    assert sum(closed) > 0 and all(c < g.n for c, g in zip(closed, gates))


def test_all_closed_vector_gets_zero_weights():
    W, x_bar, open_rows, _ = _hand_built()
    w_r, w_c = channel_weights(_t(W), _t(x_bar), _t(open_rows), torch.zeros(5, dtype=torch.bool), 100.0)
    assert (w_c == 0).all() and torch.isfinite(w_r).all() and (w_r[_t(open_rows)] > 0).all()


def test_tau_to_infinity_is_plain_target_over_open_gates():
    model, layers = _gated_tiny()
    keep = 0.6
    # reference: per gate vector |mean over open gates of P - keep|, averaged over gate vectors
    terms = []
    for m in layers.values():
        for gate in m.gates():
            open_ = gate.eval_gate() > 0
            terms.append((gate.prob_open()[open_].mean() - keep).abs())
    ref = torch.stack(terms).mean()
    pen = gc.sparsity_penalty(model, "target", target=1 - keep, kurtosis_tau=1e12)
    assert torch.isclose(pen, ref, rtol=1e-10, atol=0), (pen.item(), ref.item())
    # with closed gates present this differs from the plain objective, which counts them
    assert not torch.isclose(pen, gc.sparsity_penalty(model, "target", target=1 - keep), rtol=1e-6)


def test_finite_tau_penalty_is_the_weighted_sum():
    model, layers = _gated_tiny(seed=1)
    keep, tau = 0.7, 0.3  # a small tau so the weights are far from uniform
    weights = gc.kurtosis_weights(model, tau)
    terms = []
    for name, m in layers.items():
        for gate, w in zip((m.row_gate, m.col_gate), weights[name]):
            terms.append(((w * gate.prob_open()).sum() - keep).abs())
    ref = torch.stack(terms).mean()
    pen = gc.sparsity_penalty(model, "target", target=1 - keep, kurtosis_tau=tau)
    assert torch.isclose(pen, ref, rtol=1e-13, atol=0)  # BLAS sums may round differently call to call
    uniform = gc.sparsity_penalty(model, "target", target=1 - keep, kurtosis_tau=1e12)
    assert not torch.isclose(pen, uniform, rtol=1e-6)
    # reg_sigma override reaches the weighted penalty too
    assert not torch.isclose(
        gc.sparsity_penalty(model, "target", target=1 - keep, reg_sigma=0.1, kurtosis_tau=tau), pen, rtol=1e-6
    )


def test_gradients_flow_to_open_thetas_only():
    model, layers = _gated_tiny(seed=2)
    model.requires_grad_(True)  # weights and biases trainable too: the penalty must still not touch them
    pen = gc.sparsity_penalty(model, "target", target=0.4, kurtosis_tau=0.5)
    gates = [g for m in layers.values() for g in m.gates()]
    others = [p for n, p in model.named_parameters() if not n.endswith("theta")]
    grads = torch.autograd.grad(pen, [g.theta for g in gates] + others, allow_unused=True)
    g_theta, g_other = grads[: len(gates)], grads[len(gates) :]
    assert all(g is None for g in g_other)
    for gate, g in zip(gates, g_theta):
        closed = gate.eval_gate() == 0
        assert (g[closed] == 0).all()
        assert (g[~closed] != 0).all()
    for m in layers.values():
        assert not m.input_mean.requires_grad
    for w_r, w_c in gc.kurtosis_weights(model, 0.5).values():
        assert not w_r.requires_grad and not w_c.requires_grad


def test_penalty_gradient_matches_finite_differences():
    model, _ = _gated_tiny(seed=3)
    theta_gradcheck(model, lambda: gc.sparsity_penalty(model, "target", target=0.35, kurtosis_tau=0.5), directions=3)


def test_input_x_gets_no_gradient_from_the_penalty():
    lin = nn.Linear(8, 5, dtype=torch.float64)
    model = nn.Sequential(gc.GatedLinear(lin))
    gc.track_input_means(model)
    x = torch.randn(3, 4, 8, dtype=torch.float64, requires_grad=True)
    model(x)
    pen = gc.sparsity_penalty(model, "target", target=0.3, kurtosis_tau=1.0)
    gx, gw, gb = torch.autograd.grad(pen, [x, lin.weight, lin.bias], allow_unused=True)
    assert gx is None and gw is None and gb is None


@pytest.mark.parametrize("shape", [(3, 4, 8), (2, 8), (40, 8)])  # few tokens: activation path; many: fused path
def test_recorded_mean_and_unchanged_outputs_and_gradients(shape):
    torch.manual_seed(0)
    gl = gc.GatedLinear(nn.Linear(8, 5, dtype=torch.float64)).train()
    for gate in gl.gates():
        gate.fixed_eps = torch.randn(gate.n, dtype=torch.float64)
    x = torch.randn(*shape, dtype=torch.float64)
    grads, outs = [], []
    for on in (False, True):
        gl.track_input_mean = on
        xi = x.clone().requires_grad_(True)
        y = gl(xi)
        (y.square().sum()).backward()
        outs.append(y.detach())
        grads.append([xi.grad] + [g.theta.grad.clone() for g in gl.gates()])
        for g in gl.gates():
            g.theta.grad = None
    assert torch.equal(outs[0], outs[1])
    assert all(torch.equal(a, b) for a, b in zip(*grads))
    torch.testing.assert_close(gl.input_mean, x.reshape(-1, 8).mean(0), rtol=0, atol=1e-15)
    assert not gl.input_mean.requires_grad


def test_recording_off_stores_nothing():
    model = tiny_model("bert")
    layers = gc.add_gates(model)
    batch = tiny_batch(model)
    model(**batch)
    assert all(m.input_mean is None for m in layers.values())  # off by default
    assert gc.track_input_means(model) == len(layers)
    model(**batch)
    assert all(m.input_mean is not None for m in layers.values())
    gc.track_input_means(model, False)
    assert all(m.input_mean is None for m in layers.values())
    model(**batch)
    assert all(m.input_mean is None for m in layers.values())


def test_bfloat16_input_mean_is_float32():
    gl = gc.GatedLinear(nn.Linear(8, 5)).to(torch.bfloat16)
    gl.track_input_mean = True
    gl(torch.randn(2, 3, 8, dtype=torch.bfloat16))
    assert gl.input_mean.dtype == torch.float32
    model = nn.Sequential(gl)
    assert torch.isfinite(gc.sparsity_penalty(model, "target", target=0.3, kurtosis_tau=100.0))


@pytest.mark.parametrize("tau", [0, -1.0, float("inf"), float("nan"), "100", True, [1.0]])
def test_bad_tau(tau):
    model, _ = _gated_tiny()
    with pytest.raises(ValueError, match="kurtosis_tau"):
        gc.sparsity_penalty(model, "target", target=0.3, kurtosis_tau=tau)
    with pytest.raises(ValueError, match="kurtosis_tau"):
        gc.kurtosis_weights(model, tau)


@pytest.mark.parametrize("kind", ["l0", "params"])
def test_unsupported_kinds(kind):
    model, _ = _gated_tiny()
    with pytest.raises(ValueError, match="kind='target' only"):
        gc.sparsity_penalty(model, kind, target=0.3, kurtosis_tau=100.0)


def test_missing_statistics():
    model = tiny_model("bert")
    gc.add_gates(model)
    with pytest.raises(RuntimeError, match="track_input_means"):  # recording never switched on
        gc.sparsity_penalty(model, "target", target=0.3, kurtosis_tau=100.0)
    gc.track_input_means(model)
    with pytest.raises(RuntimeError, match="track_input_means"):  # on, but no forward yet
        gc.sparsity_penalty(model, "target", target=0.3, kurtosis_tau=100.0)
    model(**tiny_batch(model))
    gc.sparsity_penalty(model, "target", target=0.3, kurtosis_tau=100.0)
    gc.track_input_means(model, False)
    with pytest.raises(RuntimeError, match="track_input_means"):  # switched off again
        gc.kurtosis_weights(model)


def test_track_input_means_errors():
    with pytest.raises(ValueError, match="add_gates"):
        gc.track_input_means(tiny_model("bert"))
    model = tiny_model("bert")
    gc.add_gates(model)
    with pytest.raises(TypeError):
        gc.track_input_means(model, on="yes")
