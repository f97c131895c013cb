"""The descent test's records for one batch of rows (notebook 07, part 2): tensor work on the states of one clean pass.

For the current tokens of a batch, at every layer ``l`` and for every update (``block`` ``z^{l+1} - z^l``,
``attn`` ``z_mid - z^l``, ``ffn`` ``z^{l+1} - z_mid``): two gradients at the update's starting state (``inner``,
Eq. 14 with the prefix held fixed, :func:`helpers.residual.splice.predictor_losses`; ``true``, the model's own
next-token loss through the rest of the network, :func:`helpers.residual.splice.path_grads`), the cosine of each
update with minus the gradient and whether it is a descent direction; on a subset, the controls (a random wrong
target, the model's own argmax) and the line search read two ways (the Eq. 14 predictor; the rest of the network,
:func:`helpers.residual.splice.continuation_losses`). :mod:`helpers.experiments.descent_powered` samples the
tokens, batches them, caches the records and reads them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from helpers.lm.families import halfstep_module
from helpers.lm.load import LoadedModel
from helpers.residual.hooks import Capture, capture_halfsteps, pad_batch
from helpers.residual.splice import (
    block_keys_values,
    continuation_losses,
    path_grads,
    predictor_losses,
    stacked_keys_values,
)

CONTROLS = ("rand", "argmax")


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.double(), b.double(), dim=-1, eps=1e-30)


def _wrong_targets(targets: torch.Tensor, vocab: int, gen: torch.Generator) -> torch.Tensor:
    """A uniformly drawn token other than the true target, per token."""
    draw = torch.randint(0, vocab - 1, targets.shape, generator=gen)
    return draw + (draw >= targets).long()


def _descent(out: dict, name: str, dz: torch.Tensor, g: torch.Tensor) -> None:
    out[f"cos_{name}"] = _cos(dz, -g)
    out[f"desc_{name}"] = ((dz.double() * g.double()).sum(-1) < 0).double()


def _subset_columns(steps: list[str], alphas: tuple[float, ...]) -> list[str]:
    """Names of the control and line-search columns (NaN for tokens outside the subset)."""
    names = [f"desc_{kind}_{ctl}_{step}" for ctl in CONTROLS for step in steps
             for kind in (("true",) if step == "ffn" else ("inner", "true"))]
    return names + [f"{ab}_{step}_{a:g}" for ab in ("a", "b") for step in steps for a in alphas]


def _subset_records(lm: LoadedModel, out: dict, cap: Capture, steps: dict, targets: dict, predictor: Callable,
                    blocks: list, kv_for: dict, tokens: tuple, path: dict, sub: torch.Tensor,
                    alphas: tuple[float, ...]) -> None:
    """The controls and the line search (module docstring) for the tokens ``sub``, into ``out``."""
    n = lm.n_layers
    r, c, t, z = tokens
    nan = torch.full((n, len(r)), float("nan"), dtype=torch.float64)
    kv_last, loss_in = kv_for["block"], out["loss_in"]
    for ctl in CONTROLS:  # controls on the subset: both gradients for another target
        _, gc_in = predictor(kv_last, z[:n], targets[ctl], sub)
        pc = path_grads(lm, blocks, cap.layer_kwargs, r[sub], c[sub], z[0, sub], targets[ctl][sub],
                        halfstep_module(lm.family, lm.model.config) is not None)
        for step, (_, dz, _, _) in steps.items():
            grads = {"inner": gc_in, "true": pc["grads"].transpose(0, 1)}
            if step == "ffn":
                grads = {"true": pc["mid_grads"].transpose(0, 1)}
            for kind, g in grads.items():
                col = nan.clone()
                col[:, sub] = ((dz[:, sub].double() * g.double()).sum(-1) < 0).double()
                out[f"desc_{kind}_{ctl}_{step}"] = col
    for step, (start, dz, _, _) in steps.items():  # line search (a): the Eq. 14 predictor on start + alpha dz
        for a in alphas:
            col = nan.clone()
            if a == 0:
                col[:, sub] = (loss_in if step != "ffn" else out["loss_mid"])[:, sub].double()
            else:
                loss, _ = predictor(kv_for[step], start + a * dz, targets["true"], sub, grad=False)
                col[:, sub] = loss.double()
            out[f"a_{step}_{a:g}"] = col
    out.update(continuations(lm, blocks, cap.layer_kwargs, steps, (r, c, t), sub, alphas, path["loss"]))


def continuations(lm: LoadedModel, blocks: list, layer_kwargs: list[dict], steps: dict, tokens: tuple,
                  sub: torch.Tensor, alphas: tuple[float, ...], final_loss: torch.Tensor) -> dict[str, torch.Tensor]:
    """Line search (b) on the tokens ``sub``: for each update in ``steps`` (name -> (start state, update) [L, N, D])
    and alpha, the final loss after the rest of the real network, ``b_{step}_{alpha}`` [L, N] (NaN outside
    ``sub``). Block and FFN updates: block ``l + 1`` onwards from ``start + alpha dz``; the attention update:
    block ``l`` from its input, with the output of the family's attention-update module scaled by alpha. At
    alpha = 1 every column is ``final_loss`` (the clean pass)."""
    n, d = lm.n_layers, next(iter(steps.values()))[0].shape[-1]
    r, c, t = tokens
    k = len(sub)
    rr, cc, tt = r[sub].repeat(n), c[sub].repeat(n), t[sub].repeat(n)
    nan = torch.full((n, len(r)), float("nan"), dtype=torch.float64)
    out = {}
    for step, (start, dz) in ((name, v[:2]) for name, v in steps.items()):
        for a in alphas:
            col = nan.clone()
            if a == 1:
                col[:, sub] = final_loss[sub].double()[None].expand(n, -1)
            elif step == "attn":
                first = torch.arange(n).repeat_interleave(k)
                loss = continuation_losses(lm, blocks, layer_kwargs, first, rr, cc, start[:, sub].reshape(-1, d), tt,
                                           update_scale=torch.full((n * k,), float(a)))
                col[:, sub] = loss.reshape(n, -1).double()
            else:
                first = torch.arange(1, n + 1).repeat_interleave(k)
                cur = (start[:, sub] + a * dz[:, sub]).reshape(-1, d)
                col[:, sub] = continuation_losses(lm, blocks, layer_kwargs, first, rr, cc, cur, tt).reshape(n, -1).double()
            out[f"b_{step}_{a:g}"] = col
    return out


def _token_index(ids: torch.Tensor, positions: list[list[int]], line: list[list[bool]]) -> tuple[torch.Tensor, ...]:
    """Row, column, line-subset index and next-token target of every current token of a batch."""
    r = torch.tensor([i for i, p in enumerate(positions) for _ in p])
    c = torch.tensor([x for p in positions for x in p])
    sub = torch.tensor([x for flags in line for x in flags]).nonzero().flatten()
    return r, c, sub, ids.cpu()[r, c + 1]


def batch_records(lm: LoadedModel, rows: list[list[int]], positions: list[list[int]], line: list[list[bool]],
                  alphas: tuple[float, ...], gen: torch.Generator) -> dict[str, np.ndarray]:
    """Per (layer, token) arrays ``[L, N]`` for the current tokens of one batch of rows (see module docstring);
    tokens outside ``line`` get NaN in the control and line-search columns."""
    n = lm.n_layers
    pad = getattr(lm.tokenizer, "pad_token_id", None) or 0
    ids, mask = pad_batch(rows, pad, lm.input_device)
    cap, mid = capture_halfsteps(lm, ids, mask, every_block=True)
    b = len(rows)
    r, c, sub, t = _token_index(ids, positions, line)
    z = cap.states[:, r, c].cpu()  # [L+1, N, D]
    with torch.inference_mode():
        argmax = lm.logits(z[-1].to(lm.input_device)).argmax(-1).cpu()
    targets = {"true": t, "rand": _wrong_targets(t, lm.lm_head.weight.shape[0], gen), "argmax": argmax}
    kv_last = stacked_keys_values(lm, n - 1, cap.states[:n], cap.block_kwargs)
    blocks = block_keys_values(lm, cap.states, cap.layer_kwargs)

    def predictor(kv, current, which, tokens, grad=True):
        rr, cc = r[tokens].repeat(n), c[tokens].repeat(n)
        lt = torch.arange(n).repeat_interleave(len(tokens))
        loss, g = predictor_losses(lm, kv, cap.block_kwargs, lt * b + rr, rr, cc,
                                   current[:, tokens].reshape(-1, current.shape[-1]), which[tokens].repeat(n), grad)
        return loss.reshape(n, -1), (g.reshape(n, len(tokens), -1) if grad else None)

    everyone = torch.arange(len(r))
    out: dict[str, torch.Tensor] = {}
    loss_in, g_in = predictor(kv_last, z[:n], targets["true"], everyone)
    path = path_grads(lm, blocks, cap.layer_kwargs, r, c, z[0], t, halfstep_module(lm.family, lm.model.config) is not None)
    g_true = path["grads"].transpose(0, 1)
    out.update(loss_in=loss_in, final_loss=path["loss"][None].expand(n, -1), cos_grads=_cos(g_in, g_true))
    steps = {"block": (z[:n], z[1:] - z[:n], g_in, g_true)}
    kv_mid = None
    if mid is not None:
        zm = mid[:, r, c].cpu()
        kv_mid = stacked_keys_values(lm, n - 1, mid, cap.block_kwargs)
        loss_mid, g_mid = predictor(kv_mid, zm, targets["true"], everyone)
        out["loss_mid"] = loss_mid
        steps["attn"] = (z[:n], zm - z[:n], g_in, g_true)
        steps["ffn"] = (zm, z[1:] - zm, g_mid, path["mid_grads"].transpose(0, 1))
    for step, (_, dz, gi, gt) in steps.items():
        _descent(out, f"inner_{step}", dz, gi)
        _descent(out, f"true_{step}", dz, gt)
    nan = torch.full((n, len(r)), float("nan"), dtype=torch.float64)
    kv_for = {"block": kv_last, "attn": kv_last, "ffn": kv_mid if mid is not None else None}
    if len(sub):
        _subset_records(lm, out, cap, steps, targets, predictor, blocks, kv_for, (r, c, t, z), path, sub, alphas)
    for name in _subset_columns(list(steps), alphas):
        out.setdefault(name, nan)
    return {k: v.double().numpy() for k, v in out.items()}


def halfstep_continuations(lm: LoadedModel, rows: list[list[int]], positions: list[list[int]],
                           line: list[list[bool]], alphas: tuple[float, ...]) -> dict[str, np.ndarray]:
    """Line search (b) of the two half-steps alone for one batch (``b_attn_*``, ``b_ffn_*`` as in
    :func:`batch_records`): adds them to records cached before (b) covered the half-steps."""
    n = lm.n_layers
    pad = getattr(lm.tokenizer, "pad_token_id", None) or 0
    ids, mask = pad_batch(rows, pad, lm.input_device)
    cap, mid = capture_halfsteps(lm, ids, mask, every_block=True)
    r, c, sub, t = _token_index(ids, positions, line)
    z, zm = cap.states[:, r, c].cpu(), mid[:, r, c].cpu()
    blocks = block_keys_values(lm, cap.states, cap.layer_kwargs)
    final = continuation_losses(lm, blocks, cap.layer_kwargs, torch.full_like(r, n), r, c, z[-1], t)
    steps = {"attn": (z[:n], zm - z[:n]), "ffn": (zm, z[1:] - zm)}
    out = continuations(lm, blocks, cap.layer_kwargs, steps, (r, c, t), sub, alphas, final)
    return {k: v.numpy() for k, v in out.items()}
