"""Last-block lens (the paper's inner loss, Eq. 14) and logit lens, batched over layers.

Inner loss at layer ``l``: the layer-``l`` residual states of the whole prefix go through the LAST
block (with the attention mask, positions and rotary embeddings of the model's own call), the final
norm and the LM head; cross-entropy with the true next token. At ``l = L-1`` this is the model's own
loss. The logit lens skips the last block: final norm and LM head applied directly to layer ``l``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_map

from helpers.lm.load import LoadedModel
from helpers.residual.hooks import Capture

LOGIT_BUDGET = 1 << 26  # logits per LM-head call (256 MiB in float32): 441 rows of a 152k, 256 of a 262k vocabulary
MAX_ROWS = 1024  # rows per LM-head call for small vocabularies


def token_ce(lm: LoadedModel, h: torch.Tensor, targets: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Per-token cross-entropy (float32) of residual states ``h`` [N, D] against ``targets`` [N].

    The LM head runs on ``chunk`` rows at a time (default: :data:`LOGIT_BUDGET` logits per call, whatever the
    vocabulary), so no [tokens x layers x vocabulary] tensor is ever whole.
    """
    chunk = chunk or max(16, min(MAX_ROWS, LOGIT_BUDGET // int(lm.lm_head.weight.shape[0])))
    out = torch.empty(h.shape[0], dtype=torch.float32, device=targets.device)
    for s in range(0, h.shape[0], chunk):
        logits = lm.logits(h[s : s + chunk]).float()
        out[s : s + chunk] = F.cross_entropy(
            logits, targets[s : s + chunk].to(logits.device), reduction="none"
        ).to(out.device)
    return out


def expand_block_kwargs(kwargs: dict, batch: int, copies: int) -> dict:
    """Tile every per-row tensor of a block call ``copies`` times along the batch dimension.

    Tensors of two or more dimensions whose first dimension equals ``batch`` (> 1) are per-row
    (attention mask, position ids, rotary cos/sin); others broadcast and are left alone. The tiled
    order is layer-major: row ``c * batch + b`` is copy ``c`` of row ``b``.
    """

    def tile(value):
        if isinstance(value, torch.Tensor):
            if copies > 1 and batch > 1 and value.ndim >= 2 and value.shape[0] == batch:
                return value.repeat(copies, *([1] * (value.ndim - 1)))
            return value
        if isinstance(value, tuple):
            return tuple(tile(v) for v in value)
        if isinstance(value, list):
            return [tile(v) for v in value]
        if isinstance(value, dict):
            return {k: tile(v) for k, v in value.items()}
        return value

    return {k: tile(v) for k, v in kwargs.items()}


def layer_chunk_size(batch: int, seq_len: int, token_budget: int = 8192) -> int:
    """How many layers to stack per last-block call so one call sees about ``token_budget`` tokens."""
    return max(1, token_budget // max(1, batch * seq_len))


@torch.inference_mode()
def inner_losses(
    lm: LoadedModel,
    cap: Capture,
    rows: torch.Tensor,
    cols: torch.Tensor,
    targets: torch.Tensor,
    token_budget: int = 8192,
) -> torch.Tensor:
    """Eq. 14 inner loss [L, N] for layers 0..L-1 at token positions ``(rows, cols)``.

    Layers are stacked along the batch dimension, ``layer_chunk_size`` at a time, so the last block
    runs a few large calls instead of L small ones; the LM head sees only the selected tokens.
    """
    n_layers = lm.n_layers
    _, batch, seq_len, dim = cap.states.shape
    per_call = layer_chunk_size(batch, seq_len, token_budget)
    last_device = next(lm.blocks[n_layers - 1].parameters()).device
    out = torch.empty((n_layers, rows.numel()), dtype=torch.float32, device=targets.device)
    for l0 in range(0, n_layers, per_call):
        l1 = min(n_layers, l0 + per_call)
        k = l1 - l0
        x = cap.states[l0:l1].reshape(k * batch, seq_len, dim)
        kwargs = expand_block_kwargs(cap.block_kwargs, batch, k)
        y = lm.call_block(n_layers - 1, x.to(last_device), kwargs)
        y = y.reshape(k, batch, seq_len, dim)[:, rows.to(y.device), cols.to(y.device)]
        out[l0:l1] = token_ce(lm, y.reshape(k * rows.numel(), dim), targets.repeat(k)).reshape(k, -1)
    return out


@torch.inference_mode()
def logit_lens_losses(
    lm: LoadedModel, cap: Capture, rows: torch.Tensor, cols: torch.Tensor, targets: torch.Tensor,
    layers: int | None = None,
) -> torch.Tensor:
    """Logit-lens loss [S, N]: final norm and LM head applied directly to the states of layers 0..S-1
    (``layers`` = S; default every state, L+1; at layer L it is the model's own loss)."""
    n_states = cap.states.shape[0] if layers is None else layers
    dim = cap.states.shape[-1]
    h = cap.states[:n_states, rows.to(cap.states.device), cols.to(cap.states.device)]
    return token_ce(lm, h.reshape(-1, dim), targets.repeat(n_states)).reshape(n_states, -1)


def _plain(kwargs: dict) -> dict:
    """Normal (autograd-usable) copies of the inference-mode tensors of a captured call."""
    return tree_map(lambda v: v.clone() if isinstance(v, torch.Tensor) else v, kwargs)


@contextmanager
def _frozen(lm: LoadedModel) -> Iterator[None]:
    """No parameter gradients while active (only input gradients are computed); flags restored on exit."""
    params = [p for p in lm.model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def inner_loss_grad(lm: LoadedModel, states: torch.Tensor, block_kwargs: dict, last: torch.Tensor,
                    targets: torch.Tensor, current: torch.Tensor | None = None, grad: bool = True,
                    token_budget: int = 8192) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Eq. 14 inner loss ``[K, B]`` (float32 or better) of the token at position ``last[b]`` of each row, for K
    stacks of prefix states ``states [K, B, T, D]``, and its gradient ``[K, B, D]`` with respect to that token's
    state (the prefix held fixed). ``current [K, B, D]`` replaces the token's state (prefix unchanged). Rows must end at
    ``last`` (right padding only): the loss of position ``last`` is then the only loss of its row."""
    k_all, batch, seq, dim = states.shape
    if current is not None and tuple(current.shape) != (k_all, batch, dim):
        raise ValueError(f"current must be [K, B, D] = {(k_all, batch, dim)}, got {tuple(current.shape)}")
    rows = torch.arange(batch, device=states.device)
    per_call = layer_chunk_size(batch, seq, token_budget)
    losses, grads = [], []
    last_dev = next(lm.blocks[-1].parameters()).device
    with _frozen(lm), torch.set_grad_enabled(grad):
        for k0 in range(0, k_all, per_call):
            k = min(k_all, k0 + per_call) - k0
            x = states[k0 : k0 + k].clone()
            if current is not None:
                x[:, rows, last] = current[k0 : k0 + k].to(x.device, x.dtype)  # current may be on the CPU
            x = x.reshape(k * batch, seq, dim).to(last_dev).requires_grad_(grad)
            kwargs = _plain(expand_block_kwargs(block_kwargs, batch, k))
            y = lm.call_block(lm.n_layers - 1, x, kwargs).reshape(k, batch, seq, dim)
            y = y[:, rows.to(y.device), last.to(y.device)]
            logits = lm.logits(y.reshape(k * batch, dim))
            logits = logits.to(torch.promote_types(logits.dtype, torch.float32))  # float64 models stay float64
            ce = F.cross_entropy(logits, targets.to(logits.device).repeat(k), reduction="none")
            losses.append(ce.detach().reshape(k, batch).cpu())
            if grad:
                (gx,) = torch.autograd.grad(ce.sum(), x)
                gx = gx.reshape(k, batch, seq, dim)[:, rows.to(gx.device), last.to(gx.device)]
                grads.append(gx.to(logits.dtype).cpu())
    return torch.cat(losses), (torch.cat(grads) if grad else None)
