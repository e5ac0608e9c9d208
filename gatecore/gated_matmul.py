"""Fused gated linear: y = (x * z_c) W^T z_r + b z_r, with a backward that never forms a weight gradient.

Forward folds the gates into a scaled copy of the (small) weight, W' = z_r W z_c, so the large
activations are not multiplied twice. Backward needs only
    grad_x   = g W'
    grad_z_r = sum_t g * y_pre   = sum_t (g * y) / z_r          (y = saved output)
    grad_z_c = sum_t g_x' * x    = sum_t (grad_x * x) / z_c
    grad_b   = z_r * sum_t g
The divisions are exact up to rounding for z > 0; entries with z == 0 are recomputed from W.

Kept for backward: the output y and the input x. The input is not kept when its producer already
keeps, for its own backward, what rebuilds it elementwise; backward rebuilds it instead:
    x = gelu(u)                                   GELU keeps u         (e.g. the FFN down projection)
    x = (u - mean) * rstd * gamma + beta          LayerNorm keeps u, mean, rstd   (q, k, v, FFN up)
so the training graph holds no copy of x (on MiniLM, half of what the gates kept: 6 of 12
hidden-size activations per layer). The rebuilt x equals the forward's up to rounding.

The token sums run over chunks of tokens, and a rebuilt x is rebuilt chunk by chunk inside them:
each product and each rebuilt chunk stays in cache, and no full-size x is ever allocated again.
Every step is a differentiable torch op and the rebuild sources enter as inputs of the function,
so double backward (Hessian-vector products) sees the same function of the same leaves.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_CHUNK = 1 << 17  # numbers per chunk of tokens and CPU thread: 512 KB in float32, stays in cache from product to sum


def rebuild_recipe(x: torch.Tensor):
    """(kind, sources) that rebuild x from tensors its producer saves anyway, or None.

    Recognised producers: GELU (sources: its input) and a LayerNorm over the last dimension (its
    input, mean, rstd, weight, bias). Read from the producer's autograd node (`grad_fn._saved_*`,
    documented in the autograd notes); never under torch.func transforms, whose wrapped tensors
    carry other nodes.
    """
    node = x.grad_fn
    if node is None or x.output_nr != 0 or torch._C._functorch.is_functorch_wrapped_tensor(x):
        return None
    name = node.name()
    if name == "GeluBackward0":
        return ("gelu", node._saved_approximate), (node._saved_self,)
    if name == "NativeLayerNormBackward0" and len(node._saved_normalized_shape) == 1:
        return ("layer_norm",), (
            node._saved_input,
            node._saved_result1,
            node._saved_result2,
            node._saved_weight,
            node._saved_bias,
        )
    return None


def _rebuild(kind: tuple, sources: list, dtype: torch.dtype) -> torch.Tensor:
    """x (rows of it, when given rows of the sources) from its recipe, in at least float32, then x's dtype.

    gelu(u), or (u - mean) * rstd * gamma + beta. LayerNorm's autograd node passes no gradient
    through its mean and rstd outputs, so when the rebuild itself is differentiated (double
    backward) they are recomputed from u:
        mean = avg u,  rstd' = rstd - rstd^3 / 2 * (var(u) - [var(u)])     ([.] = detached)
    rstd' has rstd's value and, since rstd = (var + eps)^(-1/2), its derivative, without eps.
    """
    if kind[0] == "gelu":
        return F.gelu(sources[0], approximate=kind[1])
    u, mean, rstd, gamma, beta = sources
    acc = torch.promote_types(mean.dtype, torch.float32)  # half-precision inputs: rebuild in float32, round once
    u, mean, rstd = u.to(acc), mean.to(acc), rstd.to(acc)
    if torch.is_grad_enabled():
        c = u - u.mean(-1, keepdim=True)
        var = (c * c).mean(-1, keepdim=True)
        r = rstd.detach()  # the gradient goes through var(u) only, never also through LayerNorm's node
        x = c * (r - 0.5 * r.pow(3) * (var - var.detach()))
        x = x if gamma is None else x * gamma
        x = x if beta is None else x + beta
    else:
        x = torch.addcmul(-mean * rstd, u, rstd)  # (u - mean) * rstd in one pass over u
        if gamma is not None:
            x.mul_(gamma)
        if beta is not None:
            x.add_(beta)
    return x.to(dtype)


class _Rows:
    """x as (tokens x in) rows: a slice of the kept x, or rows rebuilt from the kept sources."""

    def __init__(self, kind, kept: list, dtype: torch.dtype):
        self.kind, self.dtype = kind, dtype
        # token-wise tensors flattened to rows; LayerNorm's gamma and beta are per feature
        n_rows = 1 if kind is None or kind[0] == "gelu" else 3
        self.rows = [t.reshape(-1, t.shape[-1]) for t in kept[:n_rows]]
        self.features = kept[n_rows:]

    def __call__(self, s: int, e: int) -> torch.Tensor:
        if self.kind is None:
            return self.rows[0][s:e]
        return _rebuild(self.kind, [t[s:e] for t in self.rows] + self.features, self.dtype)

    def all(self) -> torch.Tensor:
        return self(0, self.rows[0].shape[0])


def _sum_tokens(a: torch.Tensor, b, rows: int) -> torch.Tensor:
    """sum_t a[t, i] * b[t, i] over chunks of `rows` tokens; b is a tensor or b(s, e) -> b[s:e].

    (a * b).sum(0) (and linalg.vecdot, the same two ops) writes and rereads a (tokens x features)
    product; per chunk it stays in cache (4096 tokens, one thread, 2**16-number chunks: 1.1 -> 0.9 ms
    at 384 features, 7.5 -> 4.4 ms at 1536), and a rebuilt x is never allocated at full size.
    """
    parts = [
        (a[s : s + rows] * (b(s, s + rows) if callable(b) else b[s : s + rows])).sum(0)
        for s in range(0, a.shape[0], rows)
    ]
    return parts[0] if len(parts) == 1 else torch.stack(parts).sum(0)


def _chunk_rows(features: int, tokens: int, device: torch.device) -> int:
    """Tokens per chunk: _CHUNK numbers per CPU thread; on a GPU one chunk (cache plays no part there,
    and every chunk would be more kernel launches)."""
    if device.type != "cpu":
        return max(1, tokens)
    return max(1, _CHUNK * torch.get_num_threads() // max(1, features))


class GatedLinearFunction(torch.autograd.Function):
    """apply(x, weight, bias, z_r, z_c, kind, *sources): kind None keeps x; else x is rebuilt from sources."""

    generate_vmap_rule = True  # with setup_context: usable under torch.func (vmap of products)

    @staticmethod
    def forward(x, weight, bias, z_r, z_c, kind, *sources):
        w = weight * z_c * z_r.unsqueeze(1)
        return F.linear(x, w, None if bias is None else bias * z_r)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, z_r, z_c, kind, *sources = inputs
        ctx.kind, ctx.x_dtype, ctx.n_sources = kind, x.dtype, len(sources)
        ctx.save_for_backward(weight, bias, z_r, z_c, output, *(sources if kind is not None else [x]))

    @staticmethod
    def backward(ctx, g):
        weight, bias, z_r, z_c, out, *kept = ctx.saved_tensors
        need_x, need_w, need_b, need_r, need_c = ctx.needs_input_grad[:5]
        g2, o2 = g.reshape(-1, g.shape[-1]), out.reshape(-1, out.shape[-1])
        x_rows = _Rows(ctx.kind, kept, ctx.x_dtype)
        rows_in = _chunk_rows(weight.shape[1], g2.shape[0], g.device)
        rows_out = _chunk_rows(weight.shape[0], g2.shape[0], g.device)
        gx = gw = gb = gr = gc = None
        if need_r:
            closed = z_r == 0
            gr = _sum_tokens(g2, o2, rows_out) / torch.where(closed, torch.ones_like(z_r), z_r)
            if closed.any():  # y_pre of closed rows is not in the output: recompute those rows
                idx = closed.nonzero().squeeze(1)
                w_idx, b_idx = weight[idx] * z_c, None if bias is None else bias[idx]
                gr = gr.index_put(
                    (idx,), _sum_tokens(g2[:, idx], lambda s, e: F.linear(x_rows(s, e), w_idx, b_idx), rows_in)
                )
        if need_x or need_c:
            gx2 = g2 @ (weight * z_c * z_r.unsqueeze(1))
            if need_c:
                closed = z_c == 0
                gc = _sum_tokens(gx2, x_rows, rows_in) / torch.where(closed, torch.ones_like(z_c), z_c)
                if closed.any():
                    idx = closed.nonzero().squeeze(1)
                    gxp = g2 @ (weight[:, idx] * z_r.unsqueeze(1))
                    gc = gc.index_put((idx,), _sum_tokens(gxp, lambda s, e: x_rows(s, e)[:, idx], rows_in))
            if need_x:
                gx = gx2.reshape(g.shape[:-1] + (weight.shape[1],))
        if need_b:
            gb = g2.sum(0) * z_r
        if need_w:
            gw = (g2 * z_r).T @ (x_rows.all() * z_c)
        return (gx, gw, gb, gr, gc, None) + (None,) * ctx.n_sources


def gated_linear(x, weight, bias, z_r, z_c, rebuild_input: bool = True):
    """`(x * z_c) @ weight.T * z_r + bias * z_r` through the fused function.

    rebuild_input: when x comes straight from a GELU or a LayerNorm, keep their saved tensors
    instead of x and rebuild x in backward (less memory, a few elementwise passes more).
    Under autocast every input is cast to the autocast dtype first and the function runs with
    autocast off: its backward (which autocast does not reach) then sees one dtype, as a linear
    layer under autocast would compute it.
    """
    device = x.device.type
    if torch.is_autocast_enabled(device):
        dt = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            return gated_linear(
                x.to(dt), weight.to(dt), None if bias is None else bias.to(dt), z_r.to(dt), z_c.to(dt), rebuild_input
            )
    recipe = rebuild_recipe(x) if rebuild_input and torch.is_grad_enabled() else None
    if recipe is None:
        return GatedLinearFunction.apply(x, weight, bias, z_r, z_c, None)
    kind, sources = recipe
    return GatedLinearFunction.apply(x, weight, bias, z_r, z_c, kind, *sources)
