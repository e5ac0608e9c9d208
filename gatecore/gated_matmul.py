"""Fused gated linear: y = (x * z_c) W^T z_r + b z_r, with a backward that never forms a weight gradient.

Forward folds the gates into a scaled copy of the (small) weight, W' = z_r W z_c, so the large
activations are not multiplied twice. Backward needs only
    grad_x   = g W'
    grad_z_r = sum_t g * y_pre   = sum_t (g * y) / z_r          (y = saved output)
    grad_z_c = sum_t g_x' * x    = sum_t (grad_x * x) / z_c
The divisions are exact up to rounding for z > 0; entries with z == 0 are recomputed from W.
Every step is a differentiable torch op, so double backward (Hessian-vector products) works.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _sum_tokens(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_t a[t, i] * b[t, i]; vecdot skips the (tokens x features) temporary of (a * b).sum(0)."""
    return torch.linalg.vecdot(a, b, dim=0)


class GatedLinearFunction(torch.autograd.Function):
    generate_vmap_rule = True  # with setup_context: usable under torch.func (vmap of products)

    @staticmethod
    def forward(x, weight, bias, z_r, z_c):
        w = weight * z_c * z_r.unsqueeze(1)
        return F.linear(x, w, None if bias is None else bias * z_r)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, bias, z_r, z_c = inputs
        ctx.save_for_backward(x, weight, bias, z_r, z_c, output)

    @staticmethod
    def backward(ctx, g):
        x, weight, bias, z_r, z_c, out = ctx.saved_tensors
        need_x, need_w, need_b, need_r, need_c = ctx.needs_input_grad
        g2, x2, o2 = g.reshape(-1, g.shape[-1]), x.reshape(-1, x.shape[-1]), out.reshape(-1, out.shape[-1])
        gx = gw = gb = gr = gc = None
        if need_r:
            closed = z_r == 0
            gr = _sum_tokens(g2, o2) / torch.where(closed, torch.ones_like(z_r), z_r)
            if closed.any():  # y_pre of closed rows is not in the output: recompute those rows
                idx = closed.nonzero().squeeze(1)
                y_pre = F.linear(x2 * z_c, weight[idx], None if bias is None else bias[idx])
                gr = gr.index_put((idx,), _sum_tokens(g2[:, idx], y_pre))
        if need_x or need_c:
            gx2 = g2 @ (weight * z_c * z_r.unsqueeze(1))
            if need_c:
                closed = z_c == 0
                gc = _sum_tokens(gx2, x2) / torch.where(closed, torch.ones_like(z_c), z_c)
                if closed.any():
                    idx = closed.nonzero().squeeze(1)
                    gxp = (g2 * z_r) @ weight[:, idx]
                    gc = gc.index_put((idx,), _sum_tokens(gxp, x2[:, idx]))
            if need_x:
                gx = gx2.reshape(x.shape)
        if need_b:
            gb = g2.sum(0) * z_r
        if need_w:
            gw = ((g2 * z_r).T @ (x2 * z_c))
        return gx, gw, gb, gr, gc


def gated_linear(x, weight, bias, z_r, z_c):
    """`(x * z_c) @ weight.T * z_r + bias * z_r` through the fused function."""
    return GatedLinearFunction.apply(x, weight, bias, z_r, z_c)
