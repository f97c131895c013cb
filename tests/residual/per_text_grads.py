"""Every selected token's Eq. 14 inner loss and its gradient with respect to the token's own state, prefix held
fixed, from one last-block call per stack of layers under the own-path attention
(:mod:`helpers.residual.pertoken`): the Eq. 14 form of the own-path trick. Nothing in the package reads it (the
descent test takes its gradients from :mod:`helpers.residual.splice`), so it lives here beside the tests that
check it against one row cut at each token (:func:`helpers.residual.lens.inner_loss_grad`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from helpers.lm.load import LoadedModel
from helpers.residual.hooks import Capture
from helpers.residual.lens import LOGIT_BUDGET, MAX_ROWS, _plain, expand_block_kwargs, layer_chunk_size
from helpers.residual.pertoken import _frozen, own_path_attention


def _own_path_block_kwargs(block_kwargs: dict, batch: int, copies: int, seq_len: int,
                           device: torch.device) -> dict:
    """The last block's captured call arguments tiled for ``copies`` stacked layers (plain, autograd-usable
    tensors), with a mask the own-path attention can read: SDPA passes no mask for a batch without padding
    (the mask is then purely causal), so a causal boolean mask (True = attend) stands in for it."""
    kwargs = _plain(expand_block_kwargs(block_kwargs, batch, copies))
    if "attention_mask" in kwargs and kwargs["attention_mask"] is None:
        causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=device).tril()
        kwargs["attention_mask"] = causal[None, None]
    return kwargs


def _head_loss_grad(lm: LoadedModel, h: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy (float32, or float64 for a float64 model) of final norm + LM head on states ``h`` [N, D]
    against ``targets`` [N], and its gradient with respect to ``h`` [N, D]. The head runs on at most
    :data:`~helpers.residual.lens.LOGIT_BUDGET` logits at a time, each chunk differentiated at once, so no
    [tokens x vocabulary] graph is ever kept whole."""
    chunk = max(16, min(MAX_ROWS, LOGIT_BUDGET // int(lm.lm_head.weight.shape[0])))
    h = h.detach()
    loss = torch.empty(h.shape[0], dtype=torch.promote_types(h.dtype, torch.float32), device=h.device)
    grad = torch.empty_like(h)
    for s in range(0, h.shape[0], chunk):
        part = h[s : s + chunk].requires_grad_(True)
        logits = lm.logits(part)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        ce = F.cross_entropy(logits, targets[s : s + chunk].to(logits.device), reduction="none")
        (g,) = torch.autograd.grad(ce.sum(), part)
        loss[s : s + chunk] = ce.detach().to(loss.device)
        grad[s : s + chunk] = g.to(grad.device)
    return loss, grad


def inner_loss_grads_per_text(
    lm: LoadedModel,
    cap: Capture,
    rows: torch.Tensor,
    cols: torch.Tensor,
    targets: torch.Tensor,
    layers: list[int] | None = None,
    token_budget: int = 8192,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 14 inner loss and its gradient for every selected token of a captured batch, texts left whole.

    ``cap`` is :func:`helpers.residual.hooks.capture_residuals` of a batch; ``rows``, ``cols``, ``targets`` [N]
    select the tokens and their next tokens (as :func:`helpers.residual.lens.inner_losses` takes them);
    ``layers`` are the layers (default ``0..L-1``; the inner loss is defined below the last block). Returns,
    on ``targets.device``:

    - the inner losses ``[len(layers), N]`` (float32, float64 for a float64 model), equal to
      :func:`~helpers.residual.lens.inner_losses`;
    - their gradients ``[len(layers), N, D]`` (same dtype) with respect to each token's own state at that layer,
      the prefix held fixed: what :func:`~helpers.residual.lens.inner_loss_grad` gives for a row cut at the token.

    The last block runs once per stack of layers (``layer_chunk_size`` layers per call, about ``token_budget``
    tokens) under :func:`own_path_attention` with the losses of all selected positions summed: each position's
    loss then reaches only its own state's gradient (module docstring), so one backward serves every token.
    """
    n_layers = lm.n_layers
    layers = list(range(n_layers)) if layers is None else [int(x) for x in layers]
    if not layers or any(not 0 <= x < n_layers for x in layers):
        raise ValueError(f"layers must be a non-empty list within 0..{n_layers - 1}, got {layers}")
    _, batch, seq_len, dim = cap.states.shape
    per_call = layer_chunk_size(batch, seq_len, token_budget)
    last_dev = next(lm.blocks[-1].parameters()).device
    r, c = rows.to(last_dev), cols.to(last_dev)
    losses, grads = [], []
    with own_path_attention(lm), _frozen(lm.model), torch.inference_mode(False), torch.enable_grad():
        for i in range(0, len(layers), per_call):
            chunk = layers[i : i + per_call]
            k = len(chunk)
            x = cap.states[chunk].to(last_dev).reshape(k * batch, seq_len, dim).requires_grad_(True)
            kwargs = _own_path_block_kwargs(cap.block_kwargs, batch, k, seq_len, last_dev)
            y = lm.call_block(n_layers - 1, x, kwargs).reshape(k, batch, seq_len, dim)[:, r, c]
            loss, gy = _head_loss_grad(lm, y.reshape(-1, dim), targets.repeat(k))
            (gx,) = torch.autograd.grad(y.reshape(-1, dim), x, grad_outputs=gy.to(y.dtype))
            gx = gx.reshape(k, batch, seq_len, dim)[:, r, c]
            losses.append(loss.reshape(k, -1).to(targets.device))
            grads.append(gx.to(device=targets.device, dtype=loss.dtype))
    return torch.cat(losses), torch.cat(grads)
