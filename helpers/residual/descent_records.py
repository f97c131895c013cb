"""The descent test's records for one batch of rows (notebook 07, part 2): tensor work on the states of one clean pass.

For the current tokens of a batch, at every layer ``l`` and for every update ``dz`` (``block`` ``z^{l+1} - z^l``,
``attn`` ``z_mid - z^l``, ``ffn`` ``z^{l+1} - z_mid``), write ``phi(alpha)`` for the loss when the update is scaled
by ``alpha``. Three slopes, each the gradient ``g`` of one loss at one point, dotted with ``dz``:

- ``inner``: the Eq. 14 predictor (last block, final norm, LM head, prefix held fixed;
  :func:`helpers.residual.splice.predictor_losses`) at the update's starting state: ``phi_a'(0)`` of line search (a);
- ``true``: the rest of the real network at the update's starting state, ``grad f(start)`` with ``f`` the final
  loss when the state after the update is replaced (block and FFN: blocks ``l+1..``; attention: block ``l``'s FFN
  and on): ``phi_b'(0)`` of line search (b), the slope at the *start* of the step
  (:func:`helpers.residual.splice.continuation_grads`, from the alpha = 0 continuation; on the subset);
- ``true_end``: the same loss's gradient at the state *after* the update (:func:`helpers.residual.splice.path_grads`):
  ``phi_b'(1)``, about 0 at a tuned step size, a step-size test and not a descent test.

Per slope the cosine of ``dz`` with ``-g``, the slope itself and whether it is negative (descent). On a subset
(``line``): the controls (a random wrong target, the model's own argmax), the line search read two ways, and the
ablation (the update with its component along ``-g`` removed, with a random component of the same norm removed,
or with everything but that component removed; the loss change read both ways).
:mod:`helpers.experiments.descent_powered` samples the tokens, batches them, caches the records and reads them.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from helpers.lm.load import LoadedModel
from helpers.residual.hooks import capture_halfsteps, pad_batch
from helpers.residual.splice import (
    block_keys_values,
    continuation_grads,
    continuation_losses,
    path_grads,
    predictor_losses,
    stacked_keys_values,
)

CONTROLS = ("rand", "argmax")
SLOPES = ("inner", "true", "true_end")
ABLATED = ("gradient", "random", "orthogonal")  # the component removed (orthogonal: all but the gradient's)


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(a.double(), b.double(), dim=-1, eps=1e-30)


def _wrong_targets(targets: torch.Tensor, vocab: int, gen: torch.Generator) -> torch.Tensor:
    """A uniformly drawn token other than the true target, per token."""
    draw = torch.randint(0, vocab - 1, targets.shape, generator=gen)
    return draw + (draw >= targets).long()


def slope_columns(name: str, dz: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """``cos_{name}`` cos(dz, -g), ``slope_{name}`` <dz, g> (the directional derivative) and ``desc_{name}``
    (1 where it is negative: a descent direction), each [L, N]."""
    slope = (dz.double() * g.double()).sum(-1)
    return {f"cos_{name}": _cos(dz, -g), f"slope_{name}": slope, f"desc_{name}": (slope < 0).double()}


def ablated_steps(dz: torch.Tensor, g: torch.Tensor, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """The update ``dz`` [..., D] with one part removed: ``gradient`` its component along ``g``, ``random`` a
    random vector (direction uniform on the sphere, seeded) of that component's norm, ``orthogonal`` everything
    but that component."""
    unit = g.double() / g.double().norm(dim=-1, keepdim=True).clamp_min(1e-30)
    along = (dz.double() * unit).sum(-1, keepdim=True) * unit
    rand = torch.randn(dz.shape, generator=gen, dtype=torch.float64)
    rand = rand / rand.norm(dim=-1, keepdim=True) * along.norm(dim=-1, keepdim=True)
    return {"gradient": dz.double() - along, "random": dz.double() - rand, "orthogonal": along}


def subset_columns(steps: list[str], alphas: tuple[float, ...]) -> list[str]:
    """Names of the columns recorded on the subset only (NaN for other tokens)."""
    names = [f"{c}_true_{step}" for c in ("cos", "slope", "desc") for step in steps]
    names += [f"desc_{kind}_{ctl}_{step}" for ctl in CONTROLS for step in steps for kind in SLOPES]
    names += [f"{ab}_{step}_{a:g}" for ab in ("a", "b") for step in steps for a in alphas]
    return names + [f"abl_{ab}_{kind}_{step}_{comp}" for ab in ("a", "b") for kind in ("inner", "true")
                    for step in steps for comp in ABLATED]


class _Batch:
    """The clean pass of one batch and the losses of its current tokens' replaced states."""

    def __init__(self, lm: LoadedModel, rows: list[list[int]], positions: list[list[int]], line: list[list[bool]]):
        self.lm, n = lm, lm.n_layers
        pad = getattr(lm.tokenizer, "pad_token_id", None) or 0
        ids, mask = pad_batch(rows, pad, lm.input_device)
        self.cap, mid = capture_halfsteps(lm, ids, mask, every_block=True)
        self.b = len(rows)
        self.r = torch.tensor([i for i, p in enumerate(positions) for _ in p])
        self.c = torch.tensor([x for p in positions for x in p])
        self.sub = torch.tensor([x for flags in line for x in flags]).nonzero().flatten()
        self.t = ids.cpu()[self.r, self.c + 1]
        self.z = self.cap.states[:, self.r, self.c].cpu()  # [L+1, N, D]
        self.zm = mid[:, self.r, self.c].cpu() if mid is not None else None
        self.blocks = block_keys_values(lm, self.cap.states, self.cap.layer_kwargs)
        self.kv = {"block": stacked_keys_values(lm, n - 1, self.cap.states[:n], self.cap.block_kwargs)}
        self.kv["attn"] = self.kv["block"]
        if mid is not None:
            self.kv["ffn"] = stacked_keys_values(lm, n - 1, mid, self.cap.block_kwargs)

    def steps(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """Each update's starting state and the update [L, N, D]."""
        z, zm = self.z, self.zm
        out = {"block": (z[:-1], z[1:] - z[:-1])}
        if zm is not None:
            out |= {"attn": (z[:-1], zm - z[:-1]), "ffn": (zm, z[1:] - zm)}
        return out

    def predictor(self, step: str, current: torch.Tensor, targets: torch.Tensor, tokens: torch.Tensor,
                  grad: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Eq. 14 of ``current[l, k]`` [L, K, D] at layer ``l`` for the tokens ``tokens`` [K]: loss [L, K] and
        gradient [L, K, D] (the prefix after the update's start: ``step`` ffn the state after attention)."""
        n, k = self.lm.n_layers, len(tokens)
        rr, cc = self.r[tokens].repeat(n), self.c[tokens].repeat(n)
        lt = torch.arange(n).repeat_interleave(k)
        loss, g = predictor_losses(self.lm, self.kv[step], self.cap.block_kwargs, lt * self.b + rr, rr, cc,
                                   current.reshape(-1, current.shape[-1]), targets[tokens].repeat(n), grad)
        return loss.reshape(n, k), (g.reshape(n, k, -1) if grad else None)

    def rest(self, step: str, current: torch.Tensor, targets: torch.Tensor, tokens: torch.Tensor,
             shift: torch.Tensor | None = None, scale: float | None = None, grad: bool = False):
        """Line search (b)'s loss [L, K] after the rest of the network from the state *after* ``step``
        replaced: ``current`` [L, K, D] enters block ``l + 1`` (block, ffn) or, for ``attn``, block ``l`` is run
        from ``current`` with its attention update edited (``scale``, ``shift`` [L, K, D]). With ``grad`` also the
        gradient [L, K, D] with respect to ``current``."""
        n, k = self.lm.n_layers, len(tokens)
        rr, cc, tt = self.r[tokens].repeat(n), self.c[tokens].repeat(n), targets[tokens].repeat(n)
        first = torch.arange(n).repeat_interleave(k) + (step != "attn")
        flat = current.reshape(-1, current.shape[-1])
        scales = None if scale is None else torch.full((n * k,), float(scale))
        shifts = None if shift is None else shift.reshape(flat.shape)
        args = (self.lm, self.blocks, self.cap.layer_kwargs, first, rr, cc, flat, tt)
        if grad:
            loss, g = continuation_grads(*args, update_scale=scales)
            return loss.reshape(n, k), g.reshape(n, k, -1)
        return continuation_losses(*args, update_scale=scales, update_shift=shifts).reshape(n, k)

    def true_start(self, step: str, targets: torch.Tensor, tokens: torch.Tensor):
        """phi_b(0) [L, K] and the ``true`` slope's gradient [L, K, D] at the start of ``step``."""
        start, _ = self.steps()[step]
        return self.rest(step, start[:, tokens], targets, tokens, scale=0.0 if step == "attn" else None, grad=True)


def _subset_records(bt: _Batch, out: dict, targets: dict, grads: dict, final: torch.Tensor,
                    alphas: tuple[float, ...], gen: torch.Generator) -> None:
    """The ``true`` slope, controls, line search and ablation (module docstring) on the subset, into ``out``."""
    n, sub = bt.lm.n_layers, bt.sub
    nan = torch.full((n, len(bt.r)), float("nan"), dtype=torch.float64)

    def put(name: str, value: torch.Tensor) -> None:
        col = out.get(name, nan).clone()
        col[:, sub] = value.double()
        out[name] = col

    halfsteps = bt.zm is not None
    for step, (start, dz) in bt.steps().items():
        d = dz[:, sub]
        loss0, g_true = bt.true_start(step, targets["true"], sub)
        for name, v in slope_columns(f"true_{step}", d, g_true).items():
            put(name, v)
        for ctl in CONTROLS:
            _, gi = bt.predictor("ffn" if step == "ffn" else "block", start[:, sub], targets[ctl], sub, grad=True)
            pc = path_grads(bt.lm, bt.blocks, bt.cap.layer_kwargs, bt.r[sub], bt.c[sub], bt.z[0, sub],
                            targets[ctl][sub], halfsteps)
            _, gt = bt.true_start(step, targets[ctl], sub)
            for kind, g in (("inner", gi), ("true", gt), ("true_end", _end_grads(pc, step))):
                put(f"desc_{kind}_{ctl}_{step}", ((d.double() * g.double()).sum(-1) < 0).double())
        pred = "ffn" if step == "ffn" else "block"
        line_a = {}
        for a in alphas:  # line search (a) and (b)
            line_a[a] = ((out["loss_mid"] if step == "ffn" else out["loss_in"])[:, sub] if a == 0 else
                         bt.predictor(pred, start[:, sub] + a * d, targets["true"], sub)[0])
            put(f"a_{step}_{a:g}", line_a[a])
            if a == 0:
                b = loss0
            elif a == 1:
                b = final[None, sub].expand(n, -1)
            elif step == "attn":
                b = bt.rest(step, start[:, sub], targets["true"], sub, scale=a)
            else:
                b = bt.rest(step, start[:, sub] + a * d, targets["true"], sub)
            put(f"b_{step}_{a:g}", b)
        full_a = line_a[1.0] if 1.0 in line_a else bt.predictor(pred, start[:, sub] + d, targets["true"], sub)[0]
        for kind, g in (("inner", grads["inner"][step][:, sub]), ("true", g_true)):
            for comp, new in ablated_steps(d, g, gen).items():
                new = new.to(d.dtype)
                put(f"abl_a_{kind}_{step}_{comp}", bt.predictor(pred, start[:, sub] + new, targets["true"], sub)[0]
                    - full_a)
                b = (bt.rest(step, start[:, sub], targets["true"], sub, shift=new - d) if step == "attn" else
                     bt.rest(step, start[:, sub] + new, targets["true"], sub))
                put(f"abl_b_{kind}_{step}_{comp}", b - final[None, sub])


def _end_grads(path: dict, step: str) -> torch.Tensor:
    """The ``true_end`` gradient [L, N, D] of ``step``: the true loss's gradient at the state after the update."""
    if step == "attn":
        return path["mid_grads"].transpose(0, 1)
    return torch.cat([path["grads"][:, 1:], path["final_grad"][:, None]], dim=1).transpose(0, 1)


def batch_records(lm: LoadedModel, rows: list[list[int]], positions: list[list[int]], line: list[list[bool]],
                  alphas: tuple[float, ...], gen: torch.Generator) -> dict[str, np.ndarray]:
    """Per (layer, token) arrays ``[L, N]`` for the current tokens of one batch of rows (see module docstring);
    tokens outside ``line`` get NaN in the subset's columns (:func:`subset_columns`)."""
    n = lm.n_layers
    bt = _Batch(lm, rows, positions, line)
    everyone = torch.arange(len(bt.r))
    with torch.inference_mode():
        argmax = lm.logits(bt.z[-1].to(lm.input_device)).argmax(-1).cpu()
    targets = {"true": bt.t, "rand": _wrong_targets(bt.t, lm.lm_head.weight.shape[0], gen), "argmax": argmax}
    out: dict[str, torch.Tensor] = {}
    out["loss_in"], g_in = bt.predictor("block", bt.z[:-1], targets["true"], everyone, grad=True)
    path = path_grads(lm, bt.blocks, bt.cap.layer_kwargs, bt.r, bt.c, bt.z[0], bt.t, bt.zm is not None)
    out["final_loss"] = path["loss"][None].expand(n, -1)
    out["cos_grads"] = _cos(g_in, path["grads"].transpose(0, 1))  # both at z_l: Eq. 14 and dL/dz_l
    grads = {"inner": {"block": g_in, "attn": g_in}}
    if bt.zm is not None:
        out["loss_mid"], grads["inner"]["ffn"] = bt.predictor("ffn", bt.zm, targets["true"], everyone, grad=True)
    for step, (_, dz) in bt.steps().items():
        out |= slope_columns(f"inner_{step}", dz, grads["inner"][step])
        out |= slope_columns(f"true_end_{step}", dz, _end_grads(path, step))
    if len(bt.sub):
        _subset_records(bt, out, targets, grads, path["loss"], alphas, gen)
    nan = torch.full((n, len(bt.r)), float("nan"), dtype=torch.float64)
    for name in subset_columns(list(bt.steps()), alphas):
        out.setdefault(name, nan)
    return {k: v.double().numpy() for k, v in out.items()}
