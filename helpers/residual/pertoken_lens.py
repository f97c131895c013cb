"""The Eq. 14 lens (the last block + final norm + LM head applied to layer-l states) at its work floor: the
lens's last block with queries only at the selected positions (keys and values for every prefix position).
(Every token's inner-loss gradient from one backward under the own-path attention, which nothing in the
package reads, is kept in ``tests/residual/per_text_grads.py`` beside the tests that check it.)
"""

from __future__ import annotations

import torch

from helpers.lm.load import LoadedModel
from helpers.residual.hooks import Capture
from helpers.residual.lens import (
    expand_block_kwargs,
    layer_chunk_size,
    token_ce,
)
from helpers.residual.splice import KeysValuesOnly, KeyValueCache, cache_arg, query_kwargs


def _slots(rows: torch.Tensor, cols: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each selected token's slot among its row's selected tokens [N], and the query columns [B, Q] of every row
    (unused slots repeat column 0, their output is dropped)."""
    n = rows.numel()
    counts = torch.bincount(rows, minlength=batch)
    starts = torch.cumsum(counts, 0) - counts
    order = torch.argsort(rows, stable=True)
    slot = torch.empty_like(rows)
    slot[order] = torch.arange(n, device=rows.device) - starts[rows[order]]
    qcols = torch.zeros((batch, max(1, int(counts.max()) if n else 1)), dtype=torch.long, device=rows.device)
    qcols[rows, slot] = cols
    return slot, qcols


@torch.inference_mode()
def inner_losses_selected(
    lm: LoadedModel,
    cap: Capture,
    rows: torch.Tensor,
    cols: torch.Tensor,
    targets: torch.Tensor,
    token_budget: int = 8192,
) -> torch.Tensor:
    """Eq. 14 inner loss [L, N] for layers 0..L-1 at token positions ``(rows, cols)``, equal to
    :func:`helpers.residual.lens.inner_losses`, with the last block's work at the selected positions only.

    Per stack of layers (``layer_chunk_size``, as there) the last block is called twice: on every position with
    a recording cache (:class:`KeyValueCache`) that stops it as soon as its attention has the keys and values
    (pre-attention norm and q/k/v projections); then on the selected positions only, as the queries of a call
    whose cache returns those keys and values, with the mask rows, position ids and rotary tables of the
    selected positions. Attention, output projection, MLP, final norm and head see the selected tokens only.
    Works for any block that routes its keys and values through its cache argument (every family in
    transformers 5.x); raises ``NotImplementedError`` for one that does not.
    """
    n_layers = lm.n_layers
    _, batch, seq_len, dim = cap.states.shape
    block = lm.blocks[n_layers - 1]
    last_dev = next(block.parameters()).device
    arg = cache_arg(block)
    r, c = rows.to(last_dev), cols.to(last_dev)
    slot, qcols = _slots(r, c, batch)
    q_kwargs = query_kwargs(cap.block_kwargs, qcols, seq_len)
    per_call = layer_chunk_size(batch, seq_len, token_budget)
    out = torch.empty((n_layers, rows.numel()), dtype=torch.float32, device=targets.device)
    for l0 in range(0, n_layers, per_call):
        k = min(n_layers, l0 + per_call) - l0
        x = cap.states[l0 : l0 + k].to(last_dev)
        cache = KeyValueCache()
        try:
            block(x.reshape(k * batch, seq_len, dim), **expand_block_kwargs(cap.block_kwargs, batch, k),
                  **{arg: cache})
        except KeysValuesOnly:
            pass
        if cache.keys_values is None:
            raise NotImplementedError(f"{type(block).__name__} does not pass its keys and values to its cache")
        h = x[:, torch.arange(batch, device=last_dev)[:, None], qcols]  # [k, B, Q, D]
        y = lm.call_block(n_layers - 1, h.reshape(k * batch, -1, dim),
                          {**expand_block_kwargs(q_kwargs, batch, k), arg: cache})
        y = y.reshape(k, batch, -1, dim)[:, r, slot]
        out[l0 : l0 + k] = token_ce(lm, y.reshape(k * rows.numel(), dim), targets.repeat(k)).reshape(k, -1)
    return out
