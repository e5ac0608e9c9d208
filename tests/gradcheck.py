"""Shared test helper: gate-theta gradients against central finite differences."""

import torch


def theta_gradcheck(model, fn, directions=4, eps=1e-6, rtol=1e-6):
    """Autograd gradient vs central finite differences along random directions (float64)."""
    thetas = [p for n, p in model.named_parameters() if n.endswith("theta")]
    for p in model.parameters():
        p.requires_grad_(False)
    for t in thetas:
        t.requires_grad_(True)
    grads = torch.autograd.grad(fn(), thetas)
    g = torch.Generator().manual_seed(0)
    for _ in range(directions):
        v = [torch.randn(t.shape, generator=g, dtype=t.dtype) for t in thetas]
        with torch.no_grad():
            for t, d in zip(thetas, v):
                t.add_(eps * d)
            f_plus = fn().item()
            for t, d in zip(thetas, v):
                t.sub_(2 * eps * d)
            f_minus = fn().item()
            for t, d in zip(thetas, v):
                t.add_(eps * d)
        fd = (f_plus - f_minus) / (2 * eps)
        ad = sum((gr * d).sum() for gr, d in zip(grads, v)).item()
        assert abs(fd - ad) <= rtol * max(1.0, abs(ad)), (fd, ad)
        assert abs(ad) > 1e-8  # the direction actually probes something
