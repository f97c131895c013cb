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
or with everything but that component removed; the loss change read by the predictor for both gradients, and by
the rest of the network for the ``true`` one, whose reading it is: that costs one pass of the rest per variant).
:mod:`helpers.experiments.descent_slopes` samples the tokens, batches them, caches the records and reads them.
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


def token_generators(seeds: list[int]) -> list[torch.Generator]:
    """One generator per current token, seeded by the token's own seed: every random draw of a token (its wrong
    target, its random ablation directions) comes from its generator in a fixed order, so a token's records do not
    depend on which tokens share its batch (batched equals unbatched, random controls included)."""
    return [torch.Generator().manual_seed(int(s)) for s in seeds]


def _wrong_targets(targets: torch.Tensor, vocab: int, gens: list[torch.Generator]) -> torch.Tensor:
    """A uniformly drawn token other than the true target, per token (``gens[k]`` draws token ``k``'s)."""
    draw = torch.cat([torch.randint(0, vocab - 1, (1,), generator=g) for g in gens]).reshape(targets.shape)
    return draw + (draw >= targets).long()


def slope_columns(name: str, dz: torch.Tensor, g: torch.Tensor) -> dict[str, torch.Tensor]:
    """``cos_{name}`` cos(dz, -g), ``slope_{name}`` <dz, g> (the directional derivative) and ``desc_{name}``
    (1 where it is negative: a descent direction), each [L, N]."""
    slope = (dz.double() * g.double()).sum(-1)
    return {f"cos_{name}": _cos(dz, -g), f"slope_{name}": slope, f"desc_{name}": (slope < 0).double()}


def ablated_steps(dz: torch.Tensor, g: torch.Tensor, gens: list[torch.Generator]) -> dict[str, torch.Tensor]:
    """The update ``dz`` [..., K, D] of ``K`` tokens with one part removed: ``gradient`` its component along
    ``g``, ``random`` a random vector (direction uniform on the sphere, token ``k``'s drawn from ``gens[k]``) of
    that component's norm, ``orthogonal`` everything but that component."""
    unit = g.double() / g.double().norm(dim=-1, keepdim=True).clamp_min(1e-30)
    along = (dz.double() * unit).sum(-1, keepdim=True) * unit
    rand = torch.stack([torch.randn(dz[..., k, :].shape, generator=gen, dtype=torch.float64)
                        for k, gen in enumerate(gens)], dim=-2)
    rand = rand / rand.norm(dim=-1, keepdim=True) * along.norm(dim=-1, keepdim=True)
    return {"gradient": dz.double() - along, "random": dz.double() - rand, "orthogonal": along}


def subset_columns(steps: list[str], alphas: tuple[float, ...]) -> list[str]:
    """Names of the columns recorded on the subset only (NaN for other tokens)."""
    names = [f"{c}_true_{step}" for c in ("cos", "slope", "desc") for step in steps]
    names += [f"desc_{kind}_{ctl}_{step}" for ctl in CONTROLS for step in steps for kind in SLOPES
              if kind != "true" or step == "block"]
    names += [f"{ab}_{step}_{a:g}" for ab in ("a", "b") for step in steps for a in alphas]
    return names + [f"abl_{ab}_{kind}_{step}_{comp}" for ab, kinds in (("a", ("inner", "true")), ("b", ("true",)))
                    for kind in kinds for step in steps for comp in ABLATED]


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
        # every later pass reads the keys and values above and the current tokens' states: the batch's states
        # at every layer ([L+1, B, T, D] and the half-steps, 1.4 GB for a 4096-token Qwen2.5-1.5B batch) go now
        self.cap.states, mid = torch.empty(0), None  # (a slice would keep the storage alive)
        z, zm = self.z, self.zm  # each update's starting state and the update [L, N, D]
        self.steps = {"block": (z[:-1], z[1:] - z[:-1])}
        if zm is not None:
            self.steps |= {"attn": (z[:-1], zm - z[:-1]), "ffn": (zm, z[1:] - zm)}

    def predictor(self, step: str, current: torch.Tensor, targets: torch.Tensor, tokens: torch.Tensor,
                  grad: bool = False, layers: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Eq. 14 of ``current[i, k]`` [len(layers), K, D] at layer ``layers[i]`` (default every layer) for the
        tokens ``tokens`` [K]: loss [len(layers), K] and gradient (the prefix after the update's start: ``step``
        ffn the state after attention)."""
        layers = torch.arange(self.lm.n_layers) if layers is None else layers
        m, k = len(layers), len(tokens)
        rr, cc = self.r[tokens].repeat(m), self.c[tokens].repeat(m)
        lt = layers.repeat_interleave(k)
        loss, g = predictor_losses(self.lm, self.kv[step], self.cap.block_kwargs, lt * self.b + rr, rr, cc,
                                   current.reshape(-1, current.shape[-1]), targets[tokens].repeat(m), grad)
        return loss.reshape(m, k), (g.reshape(m, k, -1) if grad else None)

    def rest(self, step: str, current: torch.Tensor, targets: torch.Tensor, tokens: torch.Tensor,
             layers: torch.Tensor, shift: torch.Tensor | None = None, scale: float | None = None,
             grad: bool = False):
        """Line search (b)'s loss [len(layers), K] after the rest of the network from the state *after* the
        update ``step`` of layer ``layers[i]`` replaced: ``current[i]`` [K, D] enters block ``layers[i] + 1``
        (block, ffn) or, for ``attn``, block ``layers[i]`` is run from ``current[i]`` with its attention update
        edited (``scale``, ``shift`` [len(layers), K, D]). With ``grad`` also the gradient with respect to
        ``current``."""
        m, k = len(layers), len(tokens)
        rr, cc, tt = self.r[tokens].repeat(m), self.c[tokens].repeat(m), targets[tokens].repeat(m)
        first = layers.repeat_interleave(k) + (step != "attn")
        flat = current.reshape(-1, current.shape[-1])
        scales = None if scale is None else torch.full((m * k,), float(scale))
        shifts = None if shift is None else shift.reshape(flat.shape)
        args = (self.lm, self.blocks, self.cap.layer_kwargs, first, rr, cc, flat, tt)
        if grad:
            loss, g = continuation_grads(*args, update_scale=scales)
            return loss.reshape(m, k), g.reshape(m, k, -1)
        return continuation_losses(*args, update_scale=scales, update_shift=shifts).reshape(m, k)


def _subset_records(bt: _Batch, out: dict, targets: dict, grads: dict, final: torch.Tensor,
                    alphas: tuple[float, ...], gens: list[torch.Generator], layers: torch.Tensor, full: bool) -> None:
    """On the subset's tokens at ``layers``: the ``true`` slope, the line search (a) and the ablation read by the
    predictor; with ``full`` also the controls, line search (b) and the ablation read by the rest of the network
    (module docstring), into ``out``."""
    n, sub = bt.lm.n_layers, bt.sub
    nan = torch.full((n, len(bt.r)), float("nan"), dtype=torch.float64)
    at = (layers[:, None], sub[None, :])

    def put(name: str, value: torch.Tensor) -> None:
        col = out.get(name, nan).clone()
        col[at] = value.double()
        out[name] = col

    def loss_b(step: str, start: torch.Tensor, d: torch.Tensor, a: float) -> torch.Tensor:
        if step == "attn":
            return bt.rest(step, start, targets["true"], sub, layers, scale=a)
        return bt.rest(step, start + a * d, targets["true"], sub, layers)

    controls = {}  # per target: one path through the network and the Eq. 14 gradient at each starting state
    for ctl in CONTROLS if full else ():
        path = path_grads(bt.lm, bt.blocks, bt.cap.layer_kwargs, bt.r[sub], bt.c[sub], bt.z[0, sub],
                          targets[ctl][sub], bt.zm is not None)
        inner = {p: bt.predictor(p, bt.steps[s][0][at], targets[ctl], sub, grad=True, layers=layers)[1]
                 for p, s in (("block", "block"), ("ffn", "ffn")) if s in bt.steps}
        controls[ctl] = (path, inner)
    for step, (start_all, dz_all) in bt.steps.items():
        start, d = start_all[at], dz_all[at]
        pred = "ffn" if step == "ffn" else "block"
        loss0, g_true = bt.rest(step, start, targets["true"], sub, layers, scale=0.0 if step == "attn" else None,
                                grad=True)
        for name, v in slope_columns(f"true_{step}", d, g_true).items():
            put(name, v)
        for ctl, (path, inner) in controls.items():  # the controls: every slope for another target
            slopes = {"inner": inner[pred], "true_end": _end_grads(path, step)[layers]}
            if step == "block":  # the start-of-step slope's controls on the block only (a pass each)
                slopes["true"] = bt.rest(step, start, targets[ctl], sub, layers, grad=True)[1]
            for kind, g in slopes.items():
                put(f"desc_{kind}_{ctl}_{step}", ((d.double() * g.double()).sum(-1) < 0).double())
        line_a = {}
        for a in alphas:  # line search (a) and, with ``full``, (b)
            line_a[a] = ((out["loss_mid"] if step == "ffn" else out["loss_in"])[at] if a == 0 else
                         bt.predictor(pred, start + a * d, targets["true"], sub, layers=layers)[0])
            put(f"a_{step}_{a:g}", line_a[a])
            if full:
                put(f"b_{step}_{a:g}", loss0 if a == 0 else final[None, sub].expand(len(layers), -1) if a == 1
                    else loss_b(step, start, d, a))
        full_a = line_a[1.0] if 1.0 in line_a else bt.predictor(pred, start + d, targets["true"], sub,
                                                                  layers=layers)[0]
        for kind, g in (("inner", grads["inner"][step][at]), ("true", g_true)):
            for comp, new in ablated_steps(d, g, [gens[i] for i in sub.tolist()]).items():
                new = new.to(d.dtype)
                put(f"abl_a_{kind}_{step}_{comp}",
                    bt.predictor(pred, start + new, targets["true"], sub, layers=layers)[0] - full_a)
                if full and kind == "true":  # read by the rest of the network: the true slope's own reading
                    b = (bt.rest(step, start, targets["true"], sub, layers, shift=new - d) if step == "attn" else
                         bt.rest(step, start + new, targets["true"], sub, layers))
                    put(f"abl_b_{kind}_{step}_{comp}", b - final[None, sub])


def _end_grads(path: dict, step: str) -> torch.Tensor:
    """The ``true_end`` gradient [L, N, D] of ``step``: the true loss's gradient at the state after the update."""
    if step == "attn":
        return path["mid_grads"].transpose(0, 1)
    return torch.cat([path["grads"][:, 1:], path["final_grad"][:, None]], dim=1).transpose(0, 1)


def batch_records(lm: LoadedModel, rows: list[list[int]], positions: list[list[int]], line: list[list[bool]],
                  alphas: tuple[float, ...], seeds: list[list[int]], line_stride: int = 1,
                  full: bool = True) -> dict[str, np.ndarray]:
    """Per (layer, token) arrays ``[L, N]`` for the current tokens of one batch of rows (see module docstring).
    ``seeds`` (one per current token, as ``positions``) seed each token's random draws
    (:func:`token_generators`): a token's records are the same in any batch.
    The subset's columns (:func:`subset_columns`) are computed for the tokens in ``line`` at every
    ``line_stride``-th layer (and the last), and with ``full`` False only those that need no further pass of the
    rest of the network beyond the ``true`` slope's (the untrained twin's null); NaN elsewhere."""
    n = lm.n_layers
    bt = _Batch(lm, rows, positions, line)
    everyone = torch.arange(len(bt.r))
    with torch.inference_mode():
        argmax = lm.logits(bt.z[-1].to(lm.input_device)).argmax(-1).cpu()
    gens = token_generators([s for per_row in seeds for s in per_row])
    targets = {"true": bt.t, "rand": _wrong_targets(bt.t, lm.lm_head.weight.shape[0], gens), "argmax": argmax}
    out: dict[str, torch.Tensor] = {}
    out["loss_in"], g_in = bt.predictor("block", bt.z[:-1], targets["true"], everyone, grad=True)
    path = path_grads(lm, bt.blocks, bt.cap.layer_kwargs, bt.r, bt.c, bt.z[0], bt.t, bt.zm is not None)
    out["final_loss"] = path["loss"][None].expand(n, -1)
    out["cos_grads"] = _cos(g_in, path["grads"].transpose(0, 1))  # both at z_l: Eq. 14 and dL/dz_l
    grads = {"inner": {"block": g_in, "attn": g_in}}
    if bt.zm is not None:
        out["loss_mid"], grads["inner"]["ffn"] = bt.predictor("ffn", bt.zm, targets["true"], everyone, grad=True)
    for step, (_, dz) in bt.steps.items():
        out |= slope_columns(f"inner_{step}", dz, grads["inner"][step])
        out |= slope_columns(f"true_end_{step}", dz, _end_grads(path, step))
    if len(bt.sub):
        layers = torch.tensor(sorted(set(range(0, n, line_stride)) | {n - 1}))
        _subset_records(bt, out, targets, grads, path["loss"], alphas, gens, layers, full)
    nan = torch.full((n, len(bt.r)), float("nan"), dtype=torch.float64)
    for name in subset_columns(list(bt.steps), alphas):
        out.setdefault(name, nan)
    return {k: v.double().numpy() for k, v in out.items()}
