"""The geometry of every residual step, per token: what decides whether a norm grows (Conjecture 4.1).

A step ``z -> z + dz`` keeps the norm from falling exactly when ``2 <z, dz> + |dz|^2 >= 0``, i.e.
``cos(z, dz) >= -|dz| / (2 |z|)``. One forward pass with the half-step capture gives, for every token at a position
>= ``min_position`` and every step, ``|z|``, ``|dz|`` and ``<z, dz>`` (float64), for three kinds of step: a whole
block (layer l -> l+1), its attention half-step and its MLP half-step. Two swap nulls are recorded in the same pass:
the token's own state ``z`` with the update ``dz'`` that another token received at the same step, from the same
text (``same_*``) or from another text of the batch (``other_*``); a partner of -1 means there was none. A third
null keeps each update's size and draws its direction from the covariance of that step's updates over the batch's
tokens (``cov_p``): directions as unevenly spread as the real ones, without their alignment with the stream.
"""

from __future__ import annotations

import numpy as np
import torch

from helpers.lm.load import LoadedModel
from helpers.residual.hooks import capture_halfsteps, pad_batch
from helpers.residual.records import select_tokens

KINDS = ("block", "attn", "mlp")  # a whole block; its attention half-step; its MLP half-step


def swap_partners(rows: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """For tokens grouped by row (``rows`` sorted, one entry per token): a partner in the same row (a seeded
    derangement of the row's tokens; -1 for a row of one token) and one in another row (uniform over the other rows'
    tokens; -1 when the batch has one row)."""
    rows = np.asarray(rows)
    n = len(rows)
    rng = np.random.default_rng(seed)
    same, other = np.full(n, -1, dtype=np.int64), np.full(n, -1, dtype=np.int64)
    starts = np.r_[0, np.nonzero(np.diff(rows))[0] + 1]
    ends = np.r_[starts[1:], n]
    for s, e in zip(starts, ends, strict=True):
        idx = np.arange(s, e)
        if e - s > 1:
            perm = rng.permutation(idx)
            same[perm] = np.roll(perm, 1)  # each token gets the next one of a shuffled cycle: never itself
        if n - (e - s) > 0:
            j = rng.integers(0, n - (e - s), size=e - s)
            other[idx] = np.where(j < s, j, j + (e - s))
    return same, other


def _step_pairs(states: torch.Tensor, mids: torch.Tensor | None) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    n = states.shape[0] - 1
    pairs = {"block": [(states[i], states[i + 1]) for i in range(n)]}
    if mids is not None:
        pairs["attn"] = [(states[i], mids[i]) for i in range(n)]
        pairs["mlp"] = [(mids[i], states[i + 1]) for i in range(n)]
    return pairs


def p_nondecrease_covariance_null(z: np.ndarray, dz: np.ndarray, rng: np.random.Generator,
                                  draws: int = 128) -> np.ndarray:
    """P(|z + dz'| >= |z|) per token [N] when ``dz'`` keeps the token's ``|dz|`` and takes its direction from
    N(0, C), C the empirical covariance of the updates ``dz`` [N, d] over these tokens (the uneven spread of real
    updates kept, their alignment with ``z`` not): Monte Carlo over ``draws`` directions shared by the tokens
    (``u = W (dz - mean) / sqrt(N - 1)``, ``W`` standard normal), each token's chance the fraction with
    ``cos(z, u) >= -r / 2``. A zero update keeps the norm (1); with one token there is no covariance (NaN)."""
    z, dz = np.asarray(z, dtype=np.float64), np.asarray(dz, dtype=np.float64)
    n = len(dz)
    if n < 2:
        return np.full(n, np.nan)
    centred = dz - dz.mean(axis=0)
    u = rng.standard_normal((draws, n)) @ centred / np.sqrt(n - 1)
    nz, ndz = np.linalg.norm(z, axis=1), np.linalg.norm(dz, axis=1)
    cos = (z @ u.T) / np.maximum(nz[:, None] * np.linalg.norm(u, axis=1)[None, :], np.finfo(np.float64).tiny)
    r = ndz / np.maximum(nz, np.finfo(np.float64).tiny)
    return np.where(ndz > 0, (cos >= -r[:, None] / 2).mean(axis=1), 1.0)


@torch.inference_mode()
def step_geometry(lm: LoadedModel, rows: list[list[int]], min_position: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Per-token step geometry of a batch of token rows (see the module docstring).

    Keys: ``sample`` (row index), ``position``, ``token``; for each kind ``k`` of :data:`KINDS` the model has
    (no half-steps for parallel-residual blocks): ``k_z``, ``k_dz``, ``k_dot`` [N, L] (|z|, |dz|, <z, dz>),
    ``k_same_dz``, ``k_same_dot``, ``k_other_dz``, ``k_other_dot`` [N, L] (the partner's update; NaN without one),
    ``k_cov_p`` [N, L] (the covariance-matched direction null's chance of a non-decreasing step, the covariance
    of that step's updates over the batch's tokens: :func:`p_nondecrease_covariance_null`).
    """
    pad = getattr(lm.tokenizer, "pad_token_id", None) if lm.tokenizer is not None else None
    ids, mask = pad_batch(rows, pad_id=pad if pad is not None else 0)
    cap, mids = capture_halfsteps(lm, ids, mask)
    r, c, _ = select_tokens(mask, min_position)
    out: dict[str, np.ndarray] = {"sample": r.numpy().astype(np.int32), "position": c.numpy().astype(np.int32),
                                  "token": ids[r, c].numpy().astype(np.int32)}
    same, other = swap_partners(out["sample"], seed)
    rng = np.random.default_rng(seed)
    dev = cap.states.device
    rr, cc = r.to(dev), c.to(dev)
    for kind, pairs in _step_pairs(cap.states, mids).items():
        cols: dict[str, list[np.ndarray]] = {k: [] for k in ("z", "dz", "dot", "same_dz", "same_dot", "other_dz",
                                                               "other_dot", "cov_p")}
        for a, b in pairs:
            z = a[rr, cc].double()
            dz = b[rr, cc].double() - z
            cols["z"].append(torch.linalg.vector_norm(z, dim=-1).cpu().numpy())
            ndz = torch.linalg.vector_norm(dz, dim=-1).cpu().numpy()
            cols["dz"].append(ndz)
            cols["dot"].append((z * dz).sum(-1).cpu().numpy())
            cols["cov_p"].append(p_nondecrease_covariance_null(z.cpu().numpy(), dz.cpu().numpy(), rng))
            for name, partner in (("same", same), ("other", other)):
                ok = partner >= 0
                p = torch.from_numpy(np.where(ok, partner, 0)).to(dev)
                dot = (z * dz[p]).sum(-1).cpu().numpy()
                cols[f"{name}_dz"].append(np.where(ok, ndz[np.where(ok, partner, 0)], np.nan))
                cols[f"{name}_dot"].append(np.where(ok, dot, np.nan))
        for key, parts in cols.items():
            out[f"{kind}_{key}"] = np.stack(parts, axis=1) if parts else np.zeros((len(r), 0))
    return out

