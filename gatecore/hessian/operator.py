"""Hessian-vector products of a model's loss over a chosen parameter subset (docs/design.md §4).

    H v = d/dt grad L(theta + t v) |_{t=0}        (double backward, Pearlmutter 1994)

The loss is made deterministic once, at construction: fixed batches, dropout
off (model.eval()), and gates either in eval mode or in train mode with a fixed
list of noise draws averaged inside the loss (set through `Gate.fixed_eps`,
never resampled between products). The gradient graph is built once and kept,
so each product is one extra backward pass.

The objective actually trained (docs/design.md §1, §11) is the gate loss averaged over noise draws
plus the sparsity penalty: `noise_draws=K` averages K fixed draws inside the loss (the expectation as
K grows), `penalty=lambda m: lam * sparsity_penalty(m, ...)` adds the penalty once (it has no noise).

Products are one at a time: a vmapped (is_grads_batched) backward measured no faster than the loop on
MiniLM (0.96-1.0 s vs 1.0 s per column, gates; 0.40 vs 0.39 s, LoRA; 1 thread), so it was removed.
"""

from __future__ import annotations

import re
from typing import Callable, Sequence

import torch
from torch import nn

from ..gates import Gate
from ..parameters import gate_parameters, ids, lora_parameters

SUBSETS = ("gates", "lora")


def select_params(model: nn.Module, which: str | Sequence[str]) -> list[tuple[str, nn.Parameter]]:
    """'gates' (every Gate.theta), 'lora' (every lora_A/lora_B), or name regexes (re.search)."""
    named = list(model.named_parameters())
    if which == "gates":
        chosen = ids(gate_parameters(model))
    elif which == "lora":
        chosen = ids(lora_parameters(model))
    else:
        pats = [which] if isinstance(which, str) else list(which)
        chosen = {id(p) for n, p in named if any(re.search(q, n) for q in pats)}
    out = [(n, p) for n, p in named if id(p) in chosen]
    if not out:
        raise ValueError(
            f"parameter subset {which!r} selects no parameter of {type(model).__name__}; "
            f"use 'gates', 'lora' or a regex matching names such as {named[0][0] if named else '?'}"
        )
    return out


def force_eager(model: nn.Module) -> None:
    """Eager attention: the fused SDPA/flash kernels have no double backward."""
    cfg = getattr(model, "config", None)
    if cfg is None or getattr(cfg, "_attn_implementation", "eager") == "eager":
        return
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("eager")
    else:
        cfg._attn_implementation = "eager"


def classification_loss(model: nn.Module, batch: dict) -> torch.Tensor:
    """Mean cross-entropy (or MSE for one output) of a *ForSequenceClassification on `batch` with 'labels'."""
    return model(**batch).loss


class HessianOperator:
    """Symmetric, deterministic H v over `params` of `loss_fn(model, batch)` averaged over `batches`.

    noise_draws=0: gates in eval mode (deterministic clamp). noise_draws=k > 0:
    the Gate modules (only them: dropout stays off) run in train mode with k
    fixed eps draws from `seed`, and the loss is the mean over draws.
    `dtype` converts the model (e.g. torch.float64). `products` counts H v columns.
    `penalty(model) -> scalar` (optional) is added once to the loss, e.g. the sparsity penalty.
    """

    def __init__(
        self,
        model: nn.Module,
        batches: Sequence[dict],
        params: str | Sequence[str] = "gates",
        loss_fn: Callable = classification_loss,
        noise_draws: int = 0,
        seed: int = 0,
        dtype: torch.dtype | None = None,
        penalty: Callable | None = None,
    ):
        if not batches:
            raise ValueError("HessianOperator needs at least one batch")
        if noise_draws < 0:
            raise ValueError(f"noise_draws must be >= 0, got {noise_draws}")
        if dtype is not None:
            model.to(dtype)
        force_eager(model)
        model.eval()
        self.model, self.loss_fn, self.penalty = model, loss_fn, penalty
        self.named = select_params(model, params)
        self.params = [p for _, p in self.named]
        model.requires_grad_(False)
        for p in self.params:
            p.requires_grad_(True)
        self.n = sum(p.numel() for p in self.params)
        self.dtype, self.device = self.params[0].dtype, self.params[0].device
        self.noise_draws, self.products = noise_draws, 0
        gates = [m for m in model.modules() if isinstance(m, Gate)]
        g = torch.Generator().manual_seed(seed)
        self.draws = [{m: torch.randn(m.n, generator=g).to(self.dtype) for m in gates} for _ in range(noise_draws)]
        self.batches = [{k: v.to(self.device) if torch.is_tensor(v) else v for k, v in b.items()} for b in batches]
        self._grad = None

    def loss(self) -> torch.Tensor:
        """The deterministic loss: example-weighted mean over batches, mean over noise draws, + penalty."""
        sizes = [len(next(iter(b.values()))) for b in self.batches]
        total = 0.0
        for draw in self.draws or [None]:
            for m in draw or {}:
                m.train()
                m.fixed_eps = draw[m].to(self.device)
            try:
                for b, s in zip(self.batches, sizes):
                    total = total + self.loss_fn(self.model, b) * (s / sum(sizes))
            finally:
                for m in draw or {}:
                    m.fixed_eps = None
                    m.eval()
        total = total / max(1, len(self.draws))
        return total + self.penalty(self.model) if self.penalty is not None else total

    def gradient(self) -> torch.Tensor:
        """Flat gradient with its graph kept for products (built once)."""
        if self._grad is None:
            grads = torch.autograd.grad(self.loss(), self.params, create_graph=True, allow_unused=True)
            self._grad = torch.cat(
                [(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, self.params)]
            )
            if not self._grad.requires_grad:
                raise ValueError(
                    "the loss gradient does not depend on the chosen parameters (Hessian is 0); "
                    "check the parameter subset and the loss"
                )
        return self._grad

    def _split(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [t.view_as(p) for t, p in zip(flat.split([p.numel() for p in self.params], -1), self.params)]

    def matvec(self, v) -> torch.Tensor:
        """H v for a flat vector v of length n (tensor or numpy)."""
        v = torch.as_tensor(v, dtype=self.dtype, device=self.device).reshape(-1)
        if v.numel() != self.n:
            raise ValueError(f"vector has {v.numel()} entries, the operator has n={self.n}")
        g = self.gradient()
        hv = torch.autograd.grad(g, self.params, grad_outputs=v, retain_graph=True, allow_unused=True)
        self.products += 1
        return torch.cat([(h if h is not None else torch.zeros_like(p)).reshape(-1) for h, p in zip(hv, self.params)])

    def matmat(self, V) -> torch.Tensor:
        """H V for V of shape (n, k), one product per column."""
        V = torch.as_tensor(V, dtype=self.dtype, device=self.device)
        if V.dim() == 1:
            return self.matvec(V)[:, None]
        return torch.stack([self.matvec(V[:, j]) for j in range(V.shape[1])], 1)

    def param_vector(self) -> torch.Tensor:
        return torch.cat([p.detach().reshape(-1) for p in self.params])

    def release(self) -> None:
        """Drop the kept graph (memory) and leave the gates without fixed noise."""
        self._grad = None


class Restricted:
    """P H P^T on the coordinates where `keep` is True: the operator on a coordinate subspace
    (e.g. without saturated gates, whose rows and columns of H are exactly zero)."""

    def __init__(self, op: HessianOperator, keep: torch.Tensor):
        self.op, self.idx = op, keep.nonzero().squeeze(1).to(op.device)
        self.n, self.dtype, self.device = int(self.idx.numel()), op.dtype, op.device

    @property
    def products(self) -> int:
        return self.op.products

    def matvec(self, v) -> torch.Tensor:
        full = torch.zeros(self.op.n, dtype=self.dtype, device=self.device)
        full[self.idx] = torch.as_tensor(v, dtype=self.dtype, device=self.device).reshape(-1)
        return self.op.matvec(full)[self.idx]

    def matmat(self, V) -> torch.Tensor:
        V = torch.as_tensor(V, dtype=self.dtype, device=self.device)
        full = torch.zeros(self.op.n, V.shape[1], dtype=self.dtype, device=self.device)
        full[self.idx] = V
        return self.op.matmat(full)[self.idx]
