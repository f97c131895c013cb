"""Per-token records for one batch: residual norms, inner loss (Eq. 14), logit lens, final loss."""

from __future__ import annotations

import numpy as np
import torch

from helpers.capture import capture_residuals, pad_batch
from helpers.lens import inner_losses, logit_lens_losses
from helpers.models import LoadedModel


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


def analyse_batch(
    lm: LoadedModel,
    rows: list[list[int]],
    min_position: int = 4,
    lens: bool = True,
    logit_lens: bool = True,
    keep_last_vectors: bool = False,
    token_budget: int = 8192,
) -> dict[str, np.ndarray]:
    """Analyse a batch of token rows and return per-token records (numpy) for every real token.

    Norms are recorded at every position (position 0 carries 'massive activations' in many models,
    so tables report it apart); losses only at positions >= ``min_position`` (0-based) that have a
    next token, NaN elsewhere. Keys: ``sample`` (row index in ``rows``), ``position``, ``token``, ``target`` (next token, -1 if
    none), ``norms`` [N, L+1] (float32), and when ``lens``: ``inner_loss`` [N, L] (Eq. 14, NaN without a
    target), ``final_loss`` [N]; when ``logit_lens``: ``logit_lens`` [N, L+1]. With
    ``keep_last_vectors``: ``last_vectors`` [B, L+1, D] (float32), each row's last real token at every layer.
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
    rt, ct, tt = r[has_target], c[has_target], targets_all[has_target]
    n_tok = r.numel()

    def scatter(values: torch.Tensor) -> np.ndarray:
        full = np.full((n_tok, values.shape[0]), np.nan, dtype=np.float32)
        full[has_target.numpy()] = values.T.cpu().numpy()
        return full

    if lens:
        inner = (
            inner_losses(lm, cap, rt, ct, tt, token_budget=token_budget)
            if rt.numel()
            else torch.empty(lm.n_layers, 0)
        )
        out["inner_loss"] = scatter(inner)
    if logit_lens or lens:
        ll = logit_lens_losses(lm, cap, rt, ct, tt) if rt.numel() else torch.empty(lm.n_layers + 1, 0)
        out["final_loss"] = scatter(ll[-1:])[:, 0]
        if logit_lens:
            out["logit_lens"] = scatter(ll)
    if keep_last_vectors:
        last = mask.sum(1) - 1
        vec = cap.states[:, torch.arange(len(rows)), last.to(cap.states.device)]
        out["last_vectors"] = vec.float().permute(1, 0, 2).cpu().numpy()
    return out
