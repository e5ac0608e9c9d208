"""The fused gated linear equals its definition, in value, gradient and second derivative."""
import pytest
import torch
from torch.autograd import gradcheck, gradgradcheck

import gatecore as gc
from gatecore.gated_matmul import gated_linear


def reference(x, w, b, z_r, z_c):
    y = (x * z_c) @ w.T
    return (y if b is None else y + b) * z_r


def inputs(bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    d = torch.float64
    x = torch.randn(2, 3, 5, generator=g, dtype=d)
    w = torch.randn(4, 5, generator=g, dtype=d)
    b = torch.randn(4, generator=g, dtype=d) if bias else None
    z_r = torch.tensor([0.3, 0.0, 1.0, 0.7], dtype=d)  # includes a closed row and an open one
    z_c = torch.tensor([0.5, 0.0, 1.0, 0.2, 0.9], dtype=d)
    return [t.requires_grad_(True) if t is not None else None for t in (x, w, b, z_r, z_c)]


@pytest.mark.parametrize("bias", [True, False])
def test_value_gradient_and_second_derivative(bias):
    args = inputs(bias)
    assert torch.allclose(gated_linear(*args), reference(*args), atol=1e-14, rtol=0)
    assert gradcheck(gated_linear, tuple(args))
    assert gradgradcheck(gated_linear, tuple(args))
    out = torch.randn(2, 3, 4, dtype=torch.float64)
    live = [a for a in args if a is not None]
    g1 = torch.autograd.grad((gated_linear(*args) * out).sum(), live)
    g2 = torch.autograd.grad((reference(*args) * out).sum(), live)
    for a, b in zip(g1, g2):
        assert torch.allclose(a, b, atol=1e-13, rtol=0)


def test_fused_and_activation_paths_agree_inside_a_model():
    """GatedLinear around nn.Linear (fused) vs around a zero LoRA (activation scaling)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(6, 5).double()
    fused = gc.GatedLinear(lin)
    lora = gc.LoRALinear(torch.nn.Linear(6, 5).double(), r=2)
    lora.base.load_state_dict(lin.state_dict())
    plain = gc.GatedLinear(lora)
    plain.load_state_dict(fused.state_dict(), strict=False)
    x = torch.randn(4, 6, dtype=torch.float64)
    for m in (fused, plain):
        m.eval()
        with torch.no_grad():
            m.row_gate.theta.copy_(torch.linspace(-1.2, 1.2, 5, dtype=torch.float64))
            m.col_gate.theta.copy_(torch.linspace(-1.0, 1.0, 6, dtype=torch.float64))
    ya, yb = fused(x), plain(x)
    assert torch.allclose(ya, yb, atol=1e-14, rtol=0)
    ga = torch.autograd.grad(ya.square().sum(), [fused.row_gate.theta, fused.col_gate.theta])
    gb = torch.autograd.grad(yb.square().sum(), [plain.row_gate.theta, plain.col_gate.theta])
    for a, b in zip(ga, gb):
        assert torch.allclose(a, b, atol=1e-13, rtol=0)


@pytest.mark.parametrize("tokens", [1, 40])  # 1 token: activation scaling; 40: fused
def test_both_forward_paths_of_gated_linear_match_the_definition(tokens):
    torch.manual_seed(1)
    m = gc.GatedLinear(torch.nn.Linear(6, 5).double()).eval()
    with torch.no_grad():
        m.row_gate.theta.copy_(torch.linspace(-1.2, 1.2, 5, dtype=torch.float64))
        m.col_gate.theta.copy_(torch.linspace(-1.0, 1.0, 6, dtype=torch.float64))
    x = torch.randn(tokens, 6, dtype=torch.float64)
    z_r, z_c = m.eval_gates()
    y = m(x)
    assert torch.allclose(y, reference(x, m.weight, m.bias, z_r, z_c), atol=1e-14, rtol=0)
    g = torch.autograd.grad(y.square().sum(), m.row_gate.theta)[0]
    g_ref = torch.autograd.grad(reference(x, m.weight, m.bias, m.row_gate.eval_gate(), z_c).square().sum(), m.row_gate.theta)[0]
    assert torch.allclose(g, g_ref, atol=1e-13, rtol=0)


def test_batched_second_derivative_products_match_one_at_a_time():
    """vmap over the backward (is_grads_batched) works through the fused function: batched HVPs."""
    x, w, b, z_r, z_c = inputs()
    gr = torch.autograd.grad(gated_linear(x, w, b, z_r, z_c).square().sum(), (z_r, z_c), create_graph=True)
    vs = [torch.randn(3, *t.shape, dtype=t.dtype, generator=torch.Generator().manual_seed(5)) for t in (z_r, z_c)]
    batched = torch.autograd.grad(gr, (z_r, z_c), grad_outputs=vs, is_grads_batched=True, retain_graph=True)
    for i in range(3):
        single = torch.autograd.grad(gr, (z_r, z_c), grad_outputs=[v[i] for v in vs], retain_graph=True)
        for a, s in zip(batched, single):
            assert torch.allclose(a[i], s, atol=1e-13, rtol=0)
