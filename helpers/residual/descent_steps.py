"""Notebook 07 part 1's records of one batch: one current token per row (the row ends at it), at every layer the
block update and its half-steps against the gradient of the Eq. 14 inner loss at the step's start, with random
directions of the same norm beside them (:func:`helpers.experiments.descent.run_descent` batches and keeps them).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from helpers.lm.load import LoadedModel
from helpers.residual.hooks import capture_halfsteps
from helpers.residual.lens import inner_loss_grad


def _up(t: torch.Tensor) -> torch.Tensor:
    """``t`` in float32, or in its own dtype when that is wider (norms of fp16/bf16 states in float32)."""
    return t.to(torch.promote_types(t.dtype, torch.float32))


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.double(), b.double(), dim=-1, eps=1e-30)


def same_norm_directions(dz: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` random directions per update ``dz [..., D]``, Gaussian, each rescaled to ``||dz||``: ``[n, ..., D]``."""
    r = torch.randn((n, *dz.shape), generator=gen, dtype=torch.float64)
    return r / r.norm(dim=-1, keepdim=True) * dz.double().norm(dim=-1, keepdim=True)


def step_records(lm: LoadedModel, ids: torch.Tensor, mask: torch.Tensor, targets: torch.Tensor, n_random: int,
                   gen: torch.Generator, token_budget: int) -> dict[str, np.ndarray]:
    """Per (layer, row) arrays ``[L, B]`` of one right-padded batch whose rows end at their current token."""
    n = lm.n_layers
    cap, mid = capture_halfsteps(lm, ids, mask)
    last = mask.sum(1) - 1
    rows = torch.arange(ids.shape[0], device=last.device)
    z = _up(cap.states[:, rows, last]).cpu()  # [L+1, B, D]
    loss_in, g_in = inner_loss_grad(lm, cap.states[:n], cap.block_kwargs, last, targets, token_budget=token_budget)
    nan = torch.full_like(loss_in[:1], float("nan"))
    loss_next = torch.cat([loss_in[1:], nan])  # inner loss after the block (undefined after the last block)
    out = {"norm_in": z[:n].norm(dim=-1), "norm_out": z[1:].norm(dim=-1), "loss_in": loss_in}
    steps = {"block": (z[1:] - z[:n], g_in, loss_in, loss_next)}
    if mid is not None:
        zm = _up(mid[:, rows, last]).cpu()
        loss_mid, g_mid = inner_loss_grad(lm, mid, cap.block_kwargs, last, targets, token_budget=token_budget)
        out.update(norm_mid=zm.norm(dim=-1), loss_mid=loss_mid)
        steps.update(attn=(zm - z[:n], g_in, loss_in, loss_mid), ffn=(z[1:] - zm, g_mid, loss_mid, loss_next))
    for step, (dz, g, before, after) in steps.items():
        dots = (dz.double() * g.double()).sum(-1)
        r = same_norm_directions(dz, n_random, gen)
        out[f"cos_{step}"] = _cos(dz, -g)
        out[f"descent_{step}"] = (dots < 0).double()
        out[f"lowers_{step}"] = torch.where(after.isnan(), float("nan"), (after < before).double())
        out[f"rcos_{step}"] = _cos(r[0], -g)
        out[f"rdescent_{step}"] = ((r * g.double()).sum(-1) < 0).double().mean(0)
    # random step of the block's norm at the current token, the prefix moved to layer l+1 as by the real step
    cur = z[: n - 1].double() + same_norm_directions(steps["block"][0][: n - 1], 1, gen)[0]
    loss_r, _ = inner_loss_grad(lm, cap.states[1:n], cap.block_kwargs, last, targets, current=cur, grad=False,
                                token_budget=token_budget)
    out["rlowers_block"] = torch.cat([(loss_r < loss_in[: n - 1]).double(), nan.double()])
    return {k: v.double().numpy() for k, v in out.items()}
