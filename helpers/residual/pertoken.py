"""Exact per-token gradients of the next-token loss for every token of a text, in one backward pass.

For a causal LM, position ``n``'s residual state at layer ``l``, ``z_n^l``, influences no earlier position, and
the later positions ``m > n`` do not influence ``L_n`` (the next-token cross-entropy at position ``n``). So
``dL_n/dz_n^l`` is carried by position ``n``'s own path only: its query, key and value at layers ``>= l``, with
the states of the other positions held fixed.

:func:`own_path_attention` runs the model with an attention ("own_path") in which each query sees the keys and
values of the other positions *detached* and its own key and value *live*::

    s_nm = q_n . sg(k_m) * scaling + [m == n] (q_n . k_n - q_n . sg(k_n)) * scaling
    o_n  = sum_m p_nm sg(v_m) + p_nn (v_n - sg(v_n))

(``sg`` = stop-gradient). The corrections are zero in value, so the forward pass (scores, probabilities,
outputs, losses) is the model's own; only the backward graph changes: a state ``z_n^l`` reaches no other
position's loss. Hence the gradient of the summed loss ``sum_m L_m`` with respect to ``z_n^l`` is exactly
``dL_n/dz_n^l``, for every ``n`` and every layer ``l`` at once (:func:`per_token_grads`), instead of one backward
per token (:func:`per_token_grads_naive`, the reference). The same holds for the paper's inner loss (Eq. 14, the
last block + final norm + LM head on the layer-``l`` states of the prefix): running the last block once
per stack of layers under the own-path attention gives every token's inner-loss gradient, the prefix held fixed,
from one backward, instead of one row cut at each token (:func:`helpers.residual.lens.inner_loss_grad`;
``tests/residual/per_text_grads.py`` keeps that form, which nothing here reads, beside its tests). :func:`inner_losses_selected` computes the inner loss itself
with the last block's queries, attention output, MLP and head only at the selected positions.

Layers follow :mod:`helpers.residual.hooks`: layer ``l < L`` is the input of block ``l`` (layer 0 = embeddings,
after any embedding scaling), layer ``L`` the output of the last block before the final norm.

The function is registered in transformers' ``AttentionInterface`` (and the eager, additive float mask format
in its ``AttentionMaskInterface``) under :data:`OWN_PATH`; every family whose attention dispatches through
``ALL_ATTENTION_FUNCTIONS`` (GPT-2, GPT-NeoX, Llama, Qwen2, Gemma 3, OPT in transformers 5.x) is supported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

from helpers.lm.load import LoadedModel
from helpers.residual.hooks import hooks, pad_batch
from helpers.residual.lens import (
    token_ce,
)

OWN_PATH = "own_path"


def own_path_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    softcap: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Attention with the other positions' keys and values detached and each query's own key and value live.

    Same call and return convention as transformers' ``eager_attention_forward``: ``query`` [B, H, T, D],
    ``key``/``value`` [B, Hkv, T, D] (repeated for grouped-query attention), ``attention_mask`` additive float
    [B, 1, T, T] (a boolean mask, True = attend, is accepted too); returns the output [B, T, H, D] (contiguous) and
    the probabilities [B, H, T, T]. Values equal eager attention's; only the gradients differ (module docstring).
    Needs as many keys as queries (no KV cache).
    """
    if scaling is None:
        scaling = query.shape[-1] ** -0.5
    if key.shape[-2] != query.shape[-2]:
        raise ValueError(f"own-path attention needs as many keys as queries (no KV cache): got {key.shape[-2]} "
                         f"keys for {query.shape[-2]} queries")
    if attention_mask is None and query.shape[-2] > 1:
        raise ValueError("own-path attention got no attention mask: it needs the causal mask (eager format)")
    groups = query.shape[1] // key.shape[1]
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    k_stop, v_stop = key.detach(), value.detach()
    scores = torch.matmul(query, k_stop.transpose(-1, -2)) * scaling
    # zero in value; its gradient runs through the live own key
    own = (query * key).sum(-1) * scaling - (query * k_stop).sum(-1) * scaling
    scores = scores + torch.diag_embed(own)
    if softcap is not None:
        scores = torch.tanh(scores / softcap) * softcap
    if attention_mask is not None:
        if attention_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min)
        else:
            scores = scores + attention_mask[..., : key.shape[-2]]
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
    probs = F.dropout(probs, p=dropout, training=module.training)
    p_own = probs.diagonal(dim1=-2, dim2=-1)
    out = torch.matmul(probs, v_stop) + p_own[..., None] * (value - v_stop)
    return out.transpose(1, 2).contiguous(), probs


AttentionInterface.register(OWN_PATH, own_path_attention_forward)
AttentionMaskInterface.register(OWN_PATH, ALL_MASK_ATTENTION_FUNCTIONS["eager"])


@contextmanager
def own_path_attention(lm: LoadedModel) -> Iterator[LoadedModel]:
    """Switch every attention of ``lm`` to the own-path attention (module docstring); restored on exit.

    Forward values are unchanged; under it, the gradient of a sum of per-token losses with respect to a token's
    residual state is that token's own loss gradient.
    """
    model = lm.model
    before = model.config._attn_implementation
    model.set_attn_implementation(OWN_PATH)
    if model.config._attn_implementation != OWN_PATH:
        model.set_attn_implementation(before)
        raise RuntimeError(f"{lm.name}: cannot switch its attention to '{OWN_PATH}' (family {lm.family})")
    try:
        yield lm
    finally:
        model.set_attn_implementation(before)


@contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """No parameter requires grad inside (so none accumulates a gradient); flags restored on exit."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def _check_layers(lm: LoadedModel, layers: list[int] | None) -> list[int]:
    layers = list(range(lm.n_layers + 1)) if layers is None else [int(x) for x in layers]
    bad = [x for x in layers if not 0 <= x <= lm.n_layers]
    if bad or not layers:
        raise ValueError(f"layers must be a non-empty list within 0..{lm.n_layers}, got {layers}")
    return layers


@contextmanager
def _state_hooks(lm: LoadedModel, states: dict, mids: dict | None = None) -> Iterator[None]:
    """Capture the residual states of one forward pass with their graph: ``states[l]`` = input of block ``l``
    (block 0's input is replaced by a leaf requiring grad, so every later state is in the graph), ``states[L]``
    = output of the last block; with ``mids``, ``mids[l]`` = block ``l``'s state after its attention half-step
    (the ``resid_mid`` point of :func:`helpers.residual.hooks.hooks`; none for blocks without one)."""

    def pre(i: int, hidden: torch.Tensor, named: dict) -> torch.Tensor | None:
        if i == 0:
            states[0] = hidden.detach().requires_grad_(True)
            return states[0]
        states[i] = hidden
        return None

    def post(i: int, out: torch.Tensor) -> None:
        states[lm.n_layers] = out

    with hooks(lm, resid_pre=pre, resid_mid=None if mids is None else mids.__setitem__), \
            hooks(lm, [lm.n_layers - 1], resid_post=post):
        yield


def _forward(lm: LoadedModel, ids: torch.Tensor, mask: torch.Tensor, mids: dict | None = None) -> dict:
    """One forward pass of the model with gradients on, returning the captured residual states by layer (and
    filling ``mids`` with the half-step states, see :func:`_state_hooks`)."""
    states: dict = {}
    target = lm.input_device
    with _state_hooks(lm, states, mids), torch.enable_grad():
        lm.model(input_ids=ids.to(target), attention_mask=mask.to(target), use_cache=False, logits_to_keep=1)
    return states


def _targets(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row index, position, next token) of every real token that has a next token."""
    row_idx, pos, nxt = [], [], []
    for b, row in enumerate(rows):
        for t in range(len(row) - 1):
            row_idx.append(b)
            pos.append(t)
            nxt.append(int(row[t + 1]))
    row_t, pos_t, nxt_t = (torch.tensor(x, dtype=torch.long) for x in (row_idx, pos, nxt))
    return row_t, pos_t, nxt_t


def per_token_grads(lm: LoadedModel, rows: list[list[int]], layers: list[int] | None = None,
                    pad_id: int = 0, targets: torch.Tensor | None = None, mids: bool = False) -> dict:
    """Per-token loss gradients at every requested layer for a batch of token rows: one forward, one backward.

    ``rows`` are right-padded into one batch (:func:`helpers.residual.hooks.pad_batch`). For every real token
    ``n`` that has a next token (row-major order) it returns:

    - ``loss`` [N] float32: the model's next-token cross-entropy ``L_n``;
    - ``grads`` [N, len(layers), D] (model dtype, input device): ``dL_n / dz_n^l`` at each layer ``l`` of
      ``layers`` (default all ``0..L``; ``l < L`` is block ``l``'s input, ``L`` the last block's output);
    - ``row``, ``pos`` [N]: where the token is; ``layers``: the layers, in order;
    - with ``mids``: ``mid_grads`` [N, L, D], ``dL_n / dm_n^l`` at the state after block ``l``'s attention
      half-step (``None`` for a family without half-steps).

    ``targets`` [N] replaces the next tokens as the loss's targets (the controls: a random wrong token, the
    model's own prediction); each token's gradient depends on its own target only.

    Computed under :func:`own_path_attention` (module docstring); no parameter gradient is accumulated.
    """
    layers = _check_layers(lm, layers)
    if any(len(r) < 2 for r in rows):
        raise ValueError("per_token_grads needs rows of at least 2 tokens (a token and its next token)")
    ids, mask = pad_batch(rows, pad_id)
    row_idx, pos, nxt = _targets(rows)
    if targets is not None:
        if targets.shape != nxt.shape:
            raise ValueError(f"targets must be [N] = {tuple(nxt.shape)} (one per token with a next token), "
                             f"got {tuple(targets.shape)}")
        nxt = targets.long().cpu()
    target = lm.input_device
    mid_states: dict | None = {} if mids else None
    with own_path_attention(lm), _frozen(lm.model):
        states = _forward(lm, ids, mask, mid_states)
        wrt = [states[x] for x in layers] + [mid_states[i] for i in sorted(mid_states or {})]
        with torch.enable_grad():
            final = states[lm.n_layers]
            h = final[row_idx.to(final.device), pos.to(final.device)]
            loss = token_ce(lm, h, nxt.to(target))
            grads = torch.autograd.grad(loss.sum(), wrt, allow_unused=True)
    shape = states[0].shape
    out = []
    for x, g in zip(wrt, grads, strict=True):
        if g is None:  # a state the loss does not reach (cannot happen for a causal LM); zero gradient
            g = torch.zeros_like(x)
        g = g.reshape(shape)  # OPT's half-step module sees its input flattened to [B*T, D]
        out.append(g[row_idx.to(g.device), pos.to(g.device)].to(target))
    res = {"loss": loss.detach(), "grads": torch.stack(out[: len(layers)], dim=1), "row": row_idx, "pos": pos,
           "layers": layers}
    if mids:
        res["mid_grads"] = torch.stack(out[len(layers):], dim=1) if mid_states else None
    return res


def per_token_grads_naive(lm: LoadedModel, row: list[int], layers: list[int] | None = None) -> dict:
    """The reference for :func:`per_token_grads` on one row: one backward per token, with the model's own attention.

    One forward pass of the row (graph kept); then, for each position ``n``, ``L_n`` alone is differentiated
    with respect to the states of every requested layer and the gradient at position ``n`` is kept. Same
    output as :func:`per_token_grads` for ``[row]``.
    """
    layers = _check_layers(lm, layers)
    if len(row) < 2:
        raise ValueError("per_token_grads_naive needs a row of at least 2 tokens")
    ids, mask = pad_batch([row])
    row_idx, pos, nxt = _targets([row])
    target = lm.input_device
    losses, grads = [], []
    with _frozen(lm.model):
        states = _forward(lm, ids, mask)
        with torch.enable_grad():
            final = states[lm.n_layers]
            loss = token_ce(lm, final[0, : len(row) - 1], nxt.to(target))
            wrt = [states[x] for x in layers]
            for n in range(len(row) - 1):
                g = torch.autograd.grad(loss[n], wrt, retain_graph=n < len(row) - 2, allow_unused=True)
                grads.append(torch.stack([(torch.zeros_like(s[0, n]) if gl is None else gl[0, n]).to(target)
                                          for s, gl in zip(wrt, g, strict=True)]))
                losses.append(loss[n].detach())
    return {"loss": torch.stack(losses), "grads": torch.stack(grads), "row": row_idx, "pos": pos,
            "layers": layers}
