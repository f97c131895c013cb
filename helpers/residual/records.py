"""Per-token records for one batch: residual norms, inner loss (Eq. 14), logit lens, final loss.

Exact minimal work: one forward pass with capture gives every token's norms and, through one LM-head
application to the last state, the model's own loss; only then are the tokens that need a lens chosen (the
paper's filter, final loss <= 1, plus a seeded random share of all tokens for the unfiltered panels), and
the last block and the LM head run on those tokens only. The LM head is the cost (61 applications per
token for a 30-layer model), so a lens on a third of the tokens is about a third of the work.
"""

from __future__ import annotations

import numpy as np
import torch

from helpers.config import MAX_FINAL_LOSS
from helpers.lm.load import LoadedModel
from helpers.residual.hooks import Capture, capture_residuals, pad_batch
from helpers.residual.lens import inner_losses, logit_lens_losses, token_ce
from helpers.residual.pertoken_lens import inner_losses_selected


def sample_mask(keys: np.ndarray, positions: np.ndarray, share: float, seed: int = 0) -> np.ndarray:
    """Seeded random subsample of tokens, a pure function of (seed, key, position): the same tokens are
    chosen whatever the batching, sharding or order (``keys`` are text ids)."""
    if share >= 1.0:
        return np.ones(len(keys), dtype=bool)
    keys = np.asarray(keys, dtype=np.uint64)
    pos = np.asarray(positions, dtype=np.uint64)
    with np.errstate(over="ignore"):  # splitmix64-style mixing: wrap-around is intended
        x = keys * np.uint64(0x9E3779B97F4A7C15) ^ (pos + np.uint64(seed) * np.uint64(0xBF58476D1CE4E5B9))
        x ^= x >> np.uint64(31)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(29)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53) < share


def residual_norms(states: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """L2 norms [N, L+1] of the selected tokens' states at every layer, reduced in float32."""
    picked = states[:, rows.to(states.device), cols.to(states.device)]
    return torch.linalg.vector_norm(picked.float(), dim=-1).T.contiguous()


def select_tokens(
    attention_mask: torch.Tensor, min_position: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Row, column and has-target flags of the real tokens at position >= ``min_position`` (0-based).

    With right padding a row's real tokens sit at columns 0..n-1; the last one has no next token.
    """
    mask = attention_mask.bool().cpu()
    keep = mask.clone()
    keep[:, :min_position] = False
    rows, cols = keep.nonzero(as_tuple=True)
    nxt = torch.zeros_like(mask)
    nxt[:, :-1] = mask[:, 1:]
    return rows, cols, nxt[rows, cols]


def lens_losses(lm: LoadedModel, cap: Capture, rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor,
                token_budget: int = 8192) -> torch.Tensor:
    """Eq. 14 inner loss [L, N] at ``(rows, cols)``: the last block's work at the selected positions only
    (:func:`inner_losses_selected`), or the full re-run (:func:`inner_losses`, same numbers) for a block that does
    not route its keys and values through its cache argument."""
    try:
        return inner_losses_selected(lm, cap, rows, cols, targets, token_budget=token_budget)
    except NotImplementedError:
        return inner_losses(lm, cap, rows, cols, targets, token_budget=token_budget)


def lens_choice(has_target: torch.Tensor, final: torch.Tensor, keys: np.ndarray, positions: np.ndarray,
                lens_share: float, filter_share: float | None, seed: int) -> tuple[torch.Tensor, dict]:
    """Which tokens [N] get the lens: those with a target in the seeded random share ``lens_share`` (marked
    ``lens_sampled``) or passing the paper's filter (final loss <= 1; with ``filter_share`` only a seeded share of
    them, a second :func:`sample_mask` with seed + 1, marked ``lens_filtered``). Returns the mask and the marks."""
    sampled = torch.from_numpy(sample_mask(keys, positions, lens_share, seed)) & has_target
    filtered = has_target & (final <= MAX_FINAL_LOSS)
    marks = {"lens_sampled": sampled.numpy()}
    if filter_share is not None:
        filtered &= torch.from_numpy(sample_mask(keys, positions, filter_share, seed + 1))
        marks["lens_filtered"] = filtered.numpy()
    return sampled | filtered, marks


@torch.inference_mode()
def analyse_batch(
    lm: LoadedModel,
    rows: list[list[int]],
    min_position: int = 4,
    lens: bool = True,
    logit_lens: bool = True,
    keep_last_vectors: bool = False,
    token_budget: int = 8192,
    lens_share: float | None = None,
    keys: list[int] | None = None,
    seed: int = 0,
    filter_share: float | None = None,
) -> dict[str, np.ndarray]:
    """Analyse a batch of token rows and return per-token records (numpy) for every real token.

    Norms are recorded at every position (position 0 carries 'massive activations' in many models,
    so tables report it apart); losses only at positions >= ``min_position`` (0-based) that have a
    next token, NaN elsewhere. Keys: ``sample`` (row index in ``rows``), ``position``, ``token``, ``target`` (next token, -1 if
    none), ``norms`` [N, L+1] (float32), and when ``lens``: ``inner_loss`` [N, L] (Eq. 14, NaN without a
    target), ``final_loss`` [N]; when ``logit_lens``: ``logit_lens`` [N, L+1]. With
    ``keep_last_vectors``: ``last_vectors`` [B, L+1, D] (float32), each row's last real token at every layer.

    ``lens_share`` None runs the lenses on every token with a target. A number in [0, 1] runs them only on
    the tokens that need them: final loss <= 1 (the paper's filter) or in a seeded random share
    ``lens_share`` of all tokens (:func:`sample_mask` on ``keys[row]``, default the row index, and the
    position); the others get NaN lens values. ``lens_sampled`` [N] marks the random share, the tokens that
    stand for "all tokens". ``final_loss`` is always computed for every token with a target. ``filter_share``
    keeps a seeded share of the filtered tokens, marked ``lens_filtered`` (:func:`lens_choice`).
    """
    pad = getattr(lm.tokenizer, "pad_token_id", None) if lm.tokenizer is not None else None
    ids, mask = pad_batch(rows, pad_id=pad if pad is not None else 0)
    cap = capture_residuals(lm, ids, mask)
    r, c, has_target = select_tokens(mask, 0)
    has_target &= c >= min_position
    targets_all = torch.full((r.numel(),), -1, dtype=torch.long)
    targets_all[has_target] = ids[r[has_target], c[has_target] + 1]
    out: dict[str, np.ndarray] = {
        "sample": r.numpy().astype(np.int32),
        "position": c.numpy().astype(np.int32),
        "token": ids[r, c].numpy().astype(np.int32),
        "target": targets_all.numpy().astype(np.int32),
        "norms": residual_norms(cap.states, r, c).cpu().numpy(),
    }
    n_tok = r.numel()
    if lens or logit_lens:
        final = torch.full((n_tok,), float("nan"))
        if has_target.any():
            h_last = cap.states[-1][r[has_target].to(cap.states.device), c[has_target].to(cap.states.device)]
            final[has_target] = token_ce(lm, h_last, targets_all[has_target]).cpu()
        out["final_loss"] = final.numpy()
        chosen = has_target.clone()
        if lens_share is not None:
            row_keys = np.asarray(keys if keys is not None else range(len(rows)))[out["sample"]]
            chosen, marks = lens_choice(has_target, final, row_keys, out["position"], lens_share, filter_share, seed)
            out |= marks
        rt, ct, tt = r[chosen], c[chosen], targets_all[chosen]

        def scatter(values: torch.Tensor) -> np.ndarray:
            full = np.full((n_tok, values.shape[0]), np.nan, dtype=np.float32)
            full[chosen.numpy()] = values.T.cpu().numpy()
            return full

        if lens:
            inner = (lens_losses(lm, cap, rt, ct, tt, token_budget) if rt.numel()
                     else torch.empty(lm.n_layers, 0))
            out["inner_loss"] = scatter(inner)
        if logit_lens:
            ll = logit_lens_losses(lm, cap, rt, ct, tt, layers=lm.n_layers) if rt.numel() else torch.empty(lm.n_layers, 0)
            last = np.where(chosen.numpy(), out["final_loss"], np.nan)[:, None]
            out["logit_lens"] = np.concatenate([scatter(ll), last], axis=1).astype(np.float32)
    if keep_last_vectors:
        last = mask.sum(1) - 1
        vec = cap.states[:, torch.arange(len(rows)), last.to(cap.states.device)]
        out["last_vectors"] = vec.float().permute(1, 0, 2).cpu().numpy()
    return out
