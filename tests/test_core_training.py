"""Gradients vs finite differences, the training-mode gate law, what an optimizer step may touch."""

import pytest
import torch
from gradcheck import theta_gradcheck  # tests/ is on sys.path under pytest

import gatecore as gc
from gatecore.tiny import tiny_batch, tiny_model


def _randomise(layers, lo=-1.2, hi=1.2, seed=0):
    g = torch.Generator().manual_seed(seed)
    for m in layers.values():
        for gate in m.gates():
            with torch.no_grad():
                gate.theta.copy_(torch.empty_like(gate.theta).uniform_(lo, hi, generator=g))


@pytest.mark.parametrize("penalty", ["target", "l0", "params"])
def test_sparsity_penalty_gradient_matches_finite_differences(penalty):
    model = tiny_model("bert", dtype=torch.float64)
    _randomise(gc.add_gates(model), seed=1)
    theta_gradcheck(model, lambda: gc.sparsity_penalty(model, penalty, target=None if penalty == "l0" else 0.4))


def test_loss_gradient_through_gates_matches_finite_differences(kind):
    model = tiny_model(kind, dtype=torch.float64)
    layers = gc.add_gates(model)
    _randomise(layers, lo=-0.4, hi=0.4, seed=3)  # keep gates away from the clamp kinks
    batch = tiny_batch(model, batch=2, seq=5)
    labels = torch.tensor([0, 1])
    # transformers' LLaMA computes RMSNorm and RoPE in float32 even in a float64 model: wider step, looser match
    eps, rtol = (1e-3, 1e-3) if kind == "llama" else (1e-6, 1e-6)
    theta_gradcheck(model, lambda: torch.nn.functional.cross_entropy(model(**batch).logits, labels), eps=eps, rtol=rtol)


def test_penalty_values_follow_their_definitions():
    model = tiny_model("bert", dtype=torch.float64)
    layers = gc.add_gates(model, reg_sigma=0.5)
    _randomise(layers, seed=4)
    gates = [g for m in layers.values() for g in m.gates()]
    P = [torch.special.ndtr((torch.tanh(g.theta) + 0.5) / 0.5) for g in gates]
    assert torch.isclose(gc.sparsity_penalty(model, "l0"), torch.stack([p.mean() for p in P]).mean())
    assert torch.isclose(
        gc.sparsity_penalty(model, "target", target=0.3), torch.stack([(p.mean() - 0.7).abs() for p in P]).mean()
    )
    kept = sum(P[2 * i].sum() * P[2 * i + 1].sum() for i in range(len(layers)))
    total = sum(m.out_features * m.in_features for m in layers.values())
    assert torch.isclose(gc.sparsity_penalty(model, "params", target=0.3), (kept / total - 0.7).abs())


def test_reg_sigma_equal_to_sigma_is_flat_at_init():
    model = tiny_model("bert", dtype=torch.float64)
    gc.add_gates(model, sigma=0.1, reg_sigma=0.1)
    pen = gc.sparsity_penalty(model, "l0")
    pen.backward()
    grads = torch.cat([p.grad.flatten() for n, p in model.named_parameters() if n.endswith("theta")])
    assert grads.abs().max() < 1e-20  # the DESIGN's warning: Phi(12.6) == 1, no gradient


def test_training_gate_distribution_matches_closed_form():
    torch.manual_seed(0)
    gate = gc.Gate(6, sigma=0.3, dtype=torch.float64)
    with torch.no_grad():
        gate.theta.copy_(torch.tensor([-1.0, -0.6, -0.3, 0.0, 0.3, 1.0], dtype=torch.float64))
    gate.train()
    draws = torch.stack([gate() for _ in range(40000)])
    # P(z > 0) = Phi((mu + 0.5) / sigma)
    assert torch.allclose((draws > 0).double().mean(0), gate.train_prob_open().detach(), atol=0.01)
    # E z for z = clamp(m + s eps, 0, 1): closed form of a doubly censored normal
    m, s = (gate.mu + 0.5).detach(), gate.sigma
    N, phi = torch.special.ndtr, lambda t: torch.exp(-t * t / 2) / (2 * torch.pi) ** 0.5
    a, b = (0 - m) / s, (1 - m) / s
    mean = m * (N(b) - N(a)) + s * (phi(a) - phi(b)) + (1 - N(b))
    assert torch.allclose(draws.mean(0), mean, atol=0.005)
    gate.eval()
    assert torch.equal(gate(), gate())


def test_gate_noise_follows_torch_seed(kind):
    model = tiny_model(kind)
    gc.add_gates(model, sigma=0.5)
    model.train()
    batch = tiny_batch(model)
    torch.manual_seed(7)
    a = model(**batch).logits
    torch.manual_seed(7)
    b = model(**batch).logits
    c = model(**batch).logits
    assert torch.equal(a, b) and not torch.equal(b, c)


def test_optimizer_step_moves_only_trainable_parameters(kind):
    model = tiny_model(kind)
    gc.add_gates(model)
    gc.add_lora(model)
    gc.mark_trainable(model, gates=True, lora=True, bias="gated", head=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    model.train()
    batch = tiny_batch(model)
    for _ in range(2):  # two steps: LoRA A moves once B is nonzero
        loss = torch.nn.functional.cross_entropy(model(**batch).logits, torch.tensor([0, 1, 0]))
        loss = loss + gc.sparsity_penalty(model, "target", target=0.3)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for n, p in model.named_parameters():
        if p.requires_grad:
            assert not torch.equal(p, before[n]), f"{n} is trainable but did not move"
        else:
            assert torch.equal(p, before[n]), f"{n} is frozen but changed"
            assert p.grad is None
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(
        n.endswith(("theta", "lora_A", "lora_B", "bias")) or n.startswith(("classifier", "score")) for n in trainable
    )


def test_count_parameters_matches_hand_count():
    model = tiny_model("bert")  # hidden 16, 2 layers, ffn 32, 2 labels
    gc.add_gates(model)
    gc.add_lora(model, r=2)
    c = gc.count_parameters(gc.mark_trainable(model, bias="gated"))
    h, f, L, r = 16, 32, 2, 2
    assert c.gate == L * (4 * (h + h) + (h + f) + (f + h))
    assert c.lora == L * 2 * (r * h + h * r)
    assert c.bias == L * (4 * h + f + h)
    assert c.head == h * 2 + 2
    assert c.other_trainable == 0
    assert c.total == sum(p.numel() for p in model.parameters())
    assert c.frozen == c.total - c.trainable
    c2 = gc.count_parameters(gc.mark_trainable(model, gates=False, lora=False, bias="none", head=False))
    assert c2.trainable == 0 and c2.frozen == c2.total
    c3 = gc.count_parameters(gc.mark_trainable(model, gates=False, lora=False, bias="all", head=False))
    all_biases = sum(p.numel() for n, p in model.named_parameters() if n.endswith("bias"))
    assert c3.head == 2 and c3.bias == all_biases - 2  # the head's own bias counts as head
