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
    g_ref = torch.autograd.grad(
        reference(x, m.weight, m.bias, m.row_gate.eval_gate(), z_c).square().sum(), m.row_gate.theta
    )[0]
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


# ---- inputs rebuilt in backward from what their producer keeps (LayerNorm, GELU) ------------------------


def _producer(kind):
    """x = producer(u, gamma, beta): the four recipes gated_linear rebuilds instead of keeping x."""
    return {
        "layer_norm": lambda u, gm, bt: torch.nn.functional.layer_norm(u, (5,), gm, bt),
        "layer_norm_no_affine": lambda u, gm, bt: torch.nn.functional.layer_norm(u, (5,)),
        "layer_norm_no_bias": lambda u, gm, bt: torch.nn.functional.layer_norm(u, (5,), gm),
        "gelu": lambda u, gm, bt: torch.nn.functional.gelu(u),
        "gelu_tanh": lambda u, gm, bt: torch.nn.functional.gelu(u, approximate="tanh"),
    }[kind]


def _rebuild_inputs(bias, seed=0):
    x, w, b, z_r, z_c = inputs(bias, seed)  # closed, fractional and open gates on both sides
    g = torch.Generator().manual_seed(seed + 1)
    gm = (1 + 0.3 * torch.randn(5, generator=g, dtype=torch.float64)).requires_grad_(True)
    bt = (0.2 * torch.randn(5, generator=g, dtype=torch.float64)).requires_grad_(True)
    return x, gm, bt, w, b, z_r, z_c


PRODUCERS = ["layer_norm", "layer_norm_no_affine", "layer_norm_no_bias", "gelu", "gelu_tanh"]


@pytest.mark.parametrize("kind", PRODUCERS)
@pytest.mark.parametrize("bias", [True, False])
def test_rebuilt_input_value_gradient_and_second_derivative(kind, bias):
    """x rebuilt in backward: same value, first and second derivatives as the plain definition, in
    every leaf including the producer's input and LayerNorm's gamma/beta."""
    prod = _producer(kind)
    u, gm, bt, w, b, z_r, z_c = _rebuild_inputs(bias)
    assert gatecore_recipe(prod(u, gm, bt)) is not None  # this really is the rebuild path

    def fused(u, gm, bt, w, b, z_r, z_c):
        return gated_linear(prod(u, gm, bt), w, b, z_r, z_c)

    def ref(u, gm, bt, w, b, z_r, z_c):
        return reference(prod(u, gm, bt), w, b, z_r, z_c)

    args = (u, gm, bt, w, b, z_r, z_c)
    assert torch.allclose(fused(*args), ref(*args), atol=1e-14, rtol=0)
    assert gradcheck(fused, args)
    assert gradgradcheck(fused, args)
    out = torch.randn(2, 3, 4, dtype=torch.float64)
    live = [a for a in args if a is not None]
    kw = dict(allow_unused=True, materialize_grads=True)
    g1 = torch.autograd.grad((fused(*args) * out).sum(), live, create_graph=True, **kw)
    g2 = torch.autograd.grad((ref(*args) * out).sum(), live, create_graph=True, **kw)
    for a, r in zip(g1, g2):
        assert torch.allclose(a, r, atol=1e-13, rtol=0)
    # second derivatives of the gate gradients (what the Hessian operator differentiates)
    v = [torch.randn_like(z_r), torch.randn_like(z_c)]
    h1 = torch.autograd.grad(g1[-2:], live, grad_outputs=v, **kw)
    h2 = torch.autograd.grad(g2[-2:], live, grad_outputs=v, **kw)
    for a, r in zip(h1, h2):
        assert torch.allclose(a, r, atol=1e-12, rtol=0)


def gatecore_recipe(x):
    from gatecore.gated_matmul import rebuild_recipe

    return rebuild_recipe(x)


def _saved_storages(fn):
    ptrs = set()

    def pack(t):
        ptrs.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return ptrs


@pytest.mark.parametrize("kind", ["layer_norm", "gelu"])
def test_rebuilt_input_is_not_kept(kind):
    """The graph keeps the producer's tensors, not a copy of x; rebuild_input=False keeps x."""
    prod = _producer(kind)
    u, gm, bt, w, b, z_r, z_c = _rebuild_inputs(True)
    x = prod(u, gm, bt)
    kept = _saved_storages(lambda: gated_linear(x, w, b, z_r, z_c))
    assert x.untyped_storage().data_ptr() not in kept and u.untyped_storage().data_ptr() in kept
    kept = _saved_storages(lambda: gated_linear(x, w, b, z_r, z_c, rebuild_input=False))
    assert x.untyped_storage().data_ptr() in kept


@pytest.mark.parametrize("kind", ["layer_norm", "gelu", "layer_norm_no_affine"])
def test_rebuilt_input_batched_second_derivative_products(kind):
    """vmap over the backward (is_grads_batched) through the rebuild path equals one product at a time."""
    prod = _producer(kind)
    u, gm, bt, w, b, z_r, z_c = _rebuild_inputs(True)
    gr = torch.autograd.grad(
        gated_linear(prod(u, gm, bt), w, b, z_r, z_c).square().sum(), (z_r, z_c), create_graph=True
    )
    vs = [torch.randn(3, *t.shape, dtype=t.dtype, generator=torch.Generator().manual_seed(5)) for t in (z_r, z_c)]
    batched = torch.autograd.grad(gr, (z_r, z_c, u), grad_outputs=vs, is_grads_batched=True, retain_graph=True)
    for i in range(3):
        single = torch.autograd.grad(gr, (z_r, z_c, u), grad_outputs=[v[i] for v in vs], retain_graph=True)
        for a, s in zip(batched, single):
            assert torch.allclose(a[i], s, atol=1e-13, rtol=0)


def test_not_rebuilt_when_not_straight_from_the_producer():
    """A view or an in-place change after the LayerNorm, or no graph at all: x itself is kept."""
    u, gm, bt, *_ = _rebuild_inputs(True)
    x = torch.nn.functional.layer_norm(u, (5,), gm, bt)
    assert gatecore_recipe(x) is not None
    assert gatecore_recipe(x[..., :3]) is None
    assert gatecore_recipe(x.clone().mul_(2)) is None
    assert gatecore_recipe(x.detach()) is None


@pytest.mark.parametrize("kind", ["layer_norm", "gelu", None])
def test_many_tokens_chunked_reductions_match_the_reference(kind, monkeypatch):
    """More tokens than one reduction chunk (several chunks and a ragged last one): gate gradients
    and a Hessian-vector product of the gate gradients equal the reference."""
    import gatecore.gated_matmul as gm

    monkeypatch.setattr(gm, "_CHUNK", 2**16 // torch.get_num_threads())  # 218 rows at 300 features, 327 at 200
    g = torch.Generator().manual_seed(3)
    d = torch.float64
    T, n_in, n_out = 700, 300, 200
    u = torch.randn(T, n_in, generator=g, dtype=d, requires_grad=True)
    w = torch.randn(n_out, n_in, generator=g, dtype=d) / n_in**0.5
    b = torch.randn(n_out, generator=g, dtype=d, requires_grad=True)
    z_r = torch.rand(n_out, generator=g, dtype=d)
    z_c = torch.rand(n_in, generator=g, dtype=d)
    z_r[::7], z_c[::5], z_r[1::7] = 0.0, 0.0, 1.0
    z_r.requires_grad_(True), z_c.requires_grad_(True)
    prod = (
        (lambda t: t)
        if kind is None
        else (
            lambda t: _producer(kind)(t, None, None) if kind == "gelu" else torch.nn.functional.layer_norm(t, (n_in,))
        )
    )
    out = torch.randn(T, n_out, generator=g, dtype=d)
    leaves = (u, b, z_r, z_c)
    g1 = torch.autograd.grad((gated_linear(prod(u), w, b, z_r, z_c) * out).sum(), leaves, create_graph=True)
    g2 = torch.autograd.grad((reference(prod(u), w, b, z_r, z_c) * out).sum(), leaves, create_graph=True)
    for a, r in zip(g1, g2):
        assert torch.allclose(a, r, atol=1e-10, rtol=1e-12)
    v = [torch.randn(z.shape, generator=g, dtype=d) for z in (z_r, z_c)]
    h1 = torch.autograd.grad(g1[2:], leaves, grad_outputs=v)
    h2 = torch.autograd.grad(g2[2:], leaves, grad_outputs=v)
    for a, r in zip(h1, h2):
        assert torch.allclose(a, r, atol=1e-10, rtol=1e-12)


def test_whole_model_gradient_and_hessian_products_equal_plain_autograd(monkeypatch):
    """Tiny BERT, gates on all six matrices of both layers (inputs of later gates depend on earlier
    ones), some gates closed, gated biases and the embedding LayerNorm trainable so that the first
    layer's q, k, v inputs are rebuilt too: gradient and H v over gates and biases equal those of
    the plain autograd definition, float64."""
    import gatecore.gated_matmul as gm
    from gatecore.tiny import tiny_batch, tiny_model

    model = tiny_model("bert", dtype=torch.float64)
    gc.add_gates(model, init_mean=0.5, init_std=0.6)  # mu spread over (-0.5, 1): closed, fractional, open
    gc.mark_trainable(model, gates=True, bias="gated")
    model.bert.embeddings.LayerNorm.requires_grad_(True)
    batch = tiny_batch(model, batch=4, seq=6)
    labels = torch.tensor([0, 1, 1, 0])
    params = [p for p in model.parameters() if p.requires_grad]
    v = [torch.randn_like(p) for p in params]
    rebuilt = []

    def spy(x):
        r = recipe(x)
        rebuilt.append(r is not None)
        return r

    def grad_and_hvp():
        loss = torch.nn.functional.cross_entropy(model(**batch).logits, labels)
        g = torch.autograd.grad(loss, params, create_graph=True)
        return g, torch.autograd.grad(g, params, grad_outputs=v)

    recipe = gm.rebuild_recipe
    monkeypatch.setattr(gm, "rebuild_recipe", spy)
    g1, h1 = grad_and_hvp()
    assert sum(rebuilt) == 2 * 5  # per layer: q, k, v, FFN up (after a LayerNorm), FFN down (after GELU)
    monkeypatch.setattr(gc.gates, "gated_linear", reference)
    g2, h2 = grad_and_hvp()
    for a, b in zip(g1 + h1, g2 + h2):
        assert torch.allclose(a, b, atol=1e-12, rtol=1e-10)
