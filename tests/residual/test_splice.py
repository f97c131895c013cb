"""One token's state replaced with its context cached (helpers.residual.splice) against full re-runs of cut rows
and per-token backward passes, on every family x attention implementation."""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILY_ATTN, tiny_model

from helpers.lm.families import attn_update_module, halfstep_module
from helpers.residual.hooks import capture_halfsteps, capture_residuals, pad_batch
from helpers.residual.lens import inner_loss_grad, inner_losses, token_ce
from helpers.residual.pertoken import per_token_grads
from helpers.residual.splice import (
    block_keys_values,
    continuation_losses,
    path_grads,
    predictor_losses,
    stacked_keys_values,
)

ROWS = [[5, 17, 3, 99, 42, 8, 61, 23, 7, 11, 2, 90], [4, 4, 8, 15, 16, 23, 42], [1, 2, 3, 4, 5, 6, 7, 8, 9]]
TOKENS = [(0, 6), (0, 9), (1, 4), (2, 7)]  # (row, column) of current tokens: several per row, padded rows


def _cut(lm, row: int, col: int):
    """The row cut after the token (the reference's input): ids [1, col+1], mask, capture."""
    ids, mask = pad_batch([ROWS[row][: col + 1]])
    return ids, mask, capture_residuals(lm, ids, mask)


def _setup(family, attn):
    lm = tiny_model(family, attn=attn)
    ids, mask = pad_batch(ROWS)
    cap = capture_residuals(lm, ids, mask, every_block=True)
    rows = torch.tensor([r for r, _ in TOKENS])
    cols = torch.tensor([c for _, c in TOKENS])
    targets = torch.tensor([ROWS[r][c + 1] for r, c in TOKENS])
    return lm, cap, rows, cols, targets


@pytest.mark.parametrize(("family", "attn"), FAMILY_ATTN)
def test_predictor_equals_cut_row_rerun(family, attn):
    """Eq. 14 of a replaced state with the prefix cached = the cut row re-run with the state replaced (value and
    gradient); with the token's own state = inner_losses."""
    lm, cap, rows, cols, targets = _setup(family, attn)
    n, b = lm.n_layers, len(ROWS)
    kv = stacked_keys_values(lm, n - 1, cap.states[:n], cap.block_kwargs)
    layers = torch.arange(n).repeat_interleave(len(TOKENS))
    r, c, t = rows.repeat(n), cols.repeat(n), targets.repeat(n)
    own = cap.states[layers, r, c]
    clean, _ = predictor_losses(lm, kv, cap.block_kwargs, layers * b + r, r, c, own, t)
    torch.testing.assert_close(clean, inner_losses(lm, cap, rows, cols, targets).reshape(-1), rtol=1e-5, atol=1e-5)
    gen = torch.Generator().manual_seed(0)
    moved = own + torch.randn(own.shape, generator=gen) * own.norm(dim=-1, keepdim=True) / own.shape[-1] ** 0.5
    spliced, grad = predictor_losses(lm, kv, cap.block_kwargs, layers * b + r, r, c, moved, t, grad=True)
    for i in range(len(layers)):
        _, _, cut = _cut(lm, int(r[i]), int(c[i]))
        ref, ref_g = inner_loss_grad(lm, cut.states[:n], cut.block_kwargs, c[i : i + 1], t[i : i + 1],
                                     current=moved[i][None, None].expand(n, 1, -1))
        torch.testing.assert_close(spliced[i], ref[int(layers[i]), 0].float(), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(grad[i], ref_g[int(layers[i]), 0].float(), rtol=1e-4, atol=1e-5)
    assert (spliced - clean).abs().max() > 1e-3  # the replacement matters


@pytest.mark.parametrize(("family", "attn"), FAMILY_ATTN)
def test_continuation_reproduces_the_model_and_removal_by_hook(family, attn):
    """alpha = 1 (the clean state at any start) gives the model's own loss; alpha = 0 on block l (its update
    removed at the token) and alpha = 2 equal the cut row run with a hook that scales that update."""
    lm, cap, rows, cols, targets = _setup(family, attn)
    n = lm.n_layers
    kv = block_keys_values(lm, cap.states, cap.layer_kwargs)
    final = token_ce(lm, cap.states[-1][rows, cols], targets)
    for start in range(n + 1):
        s = torch.full_like(rows, start)
        got = continuation_losses(lm, kv, cap.layer_kwargs, s, rows, cols, cap.states[start][rows, cols], targets)
        torch.testing.assert_close(got, final.float(), rtol=1e-5, atol=1e-5)
    for layer, alpha in [(layer, 0.0) for layer in range(n)] + [(1, 2.0)]:
        z = cap.states[layer][rows, cols]
        dz = cap.states[layer + 1][rows, cols] - z
        got = continuation_losses(lm, kv, cap.layer_kwargs, torch.full_like(rows, layer + 1), rows, cols,
                                  z + alpha * dz, targets)
        for i, (r, c) in enumerate(TOKENS):
            ids, mask, _ = _cut(lm, r, c)

            def scale(module, args, kwargs, output, alpha=alpha):
                hidden = args[0] if args else next(iter(kwargs.values()))
                out = (output[0] if isinstance(output, tuple) else output).clone()
                out[:, -1] = hidden[:, -1] + alpha * (out[:, -1] - hidden[:, -1])
                return (out, *output[1:]) if isinstance(output, tuple) else out

            handle = lm.blocks[layer].register_forward_hook(scale, with_kwargs=True)
            try:
                with torch.no_grad():
                    logits = lm.model(input_ids=ids, attention_mask=mask).logits[0, -1].float()
            finally:
                handle.remove()
            ref = torch.nn.functional.cross_entropy(logits[None], targets[i : i + 1])
            torch.testing.assert_close(got[i], ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("family", "attn"), FAMILY_ATTN)
def test_path_grads_equal_per_token_backward(family, attn):
    """The true loss's gradient along the token's own path = per_token_grads (itself tested against one backward
    per token), at every block input and after every attention half-step; a wrong target changes it."""
    lm, _, rows, cols, targets = _setup(family, attn)
    ids, mask = pad_batch(ROWS)
    cap, _ = capture_halfsteps(lm, ids, mask, every_block=True)
    kv = block_keys_values(lm, cap.states, cap.layer_kwargs)
    mid = halfstep_module(lm.family, lm.model.config)
    got = path_grads(lm, kv, cap.layer_kwargs, rows, cols, cap.states[0][rows, cols], targets, mid is not None)
    ref = per_token_grads(lm, ROWS, layers=list(range(lm.n_layers)), mids=True)
    at = [int(((ref["row"] == r) & (ref["pos"] == c)).nonzero()) for r, c in TOKENS]
    torch.testing.assert_close(got["loss"], ref["loss"][at].to(got["loss"].dtype), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got["grads"], ref["grads"][at].to(got["grads"].dtype), rtol=1e-4, atol=1e-6)
    if mid is not None:
        torch.testing.assert_close(got["mid_grads"], ref["mid_grads"][at].to(got["grads"].dtype), rtol=1e-4, atol=1e-6)
    wrong = path_grads(lm, kv, cap.layer_kwargs, rows, cols, cap.states[0][rows, cols], (targets + 1) % 50,
                       mid is not None)
    assert (wrong["grads"] - got["grads"]).abs().max() > 1e-6


@pytest.mark.parametrize(("family", "attn"), FAMILY_ATTN)
def test_continuation_scales_each_halfstep(family, attn):
    """The attention half-step's update scaled by alpha inside its block (the family's attention-update module)
    and the FFN half-step's update scaled on entering the next block equal the cut row run with hooks that do
    the same at the token; scaling that module's output moves the state after attention to z + alpha (mid - z)."""
    lm = tiny_model(family, attn=attn)
    module = attn_update_module(lm.family, lm.model.config)
    assert (module is None) == (halfstep_module(lm.family, lm.model.config) is None)
    if module is None:  # parallel residual: no half-step to scale
        return
    ids, mask = pad_batch(ROWS)
    cap, mid = capture_halfsteps(lm, ids, mask, every_block=True)
    kv = block_keys_values(lm, cap.states, cap.layer_kwargs)
    rows = torch.tensor([r for r, _ in TOKENS])
    cols = torch.tensor([c for _, c in TOKENS])
    targets = torch.tensor([ROWS[r][c + 1] for r, c in TOKENS])
    for layer, alpha in [(0, 0.0), (1, 2.0), (lm.n_layers - 1, 0.5)]:
        z, zm, z1 = cap.states[layer][rows, cols], mid[layer][rows, cols], cap.states[layer + 1][rows, cols]
        got_attn = continuation_losses(lm, kv, cap.layer_kwargs, torch.full_like(rows, layer), rows, cols, z, targets,
                                       update_scale=torch.full((len(rows),), alpha))
        got_ffn = continuation_losses(lm, kv, cap.layer_kwargs, torch.full_like(rows, layer + 1), rows, cols,
                                      zm + alpha * (z1 - zm), targets)
        for i, (r, c) in enumerate(TOKENS):
            cut, cut_mask, _ = _cut(lm, r, c)

            def last_token(module, args, output, alpha=alpha):
                out = (output[0] if isinstance(output, tuple) else output).clone()
                out[:, -1] = alpha * out[:, -1]
                return (out, *output[1:]) if isinstance(output, tuple) else out

            def ffn_scaled(module, args, output, alpha=alpha, start=zm[i]):
                out = (output[0] if isinstance(output, tuple) else output).clone()
                out[:, -1] = start + alpha * (out[:, -1] - start)
                return (out, *output[1:]) if isinstance(output, tuple) else out

            for hooked, got in ((getattr(lm.blocks[layer], module), got_attn), (lm.blocks[layer], got_ffn)):
                handle = hooked.register_forward_hook(last_token if got is got_attn else ffn_scaled)
                try:
                    with torch.no_grad():
                        logits = lm.model(input_ids=cut, attention_mask=cut_mask).logits[0, -1].float()
                        moved = capture_halfsteps(lm, cut, cut_mask)[1] if got is got_attn else None
                finally:
                    handle.remove()
                ref = torch.nn.functional.cross_entropy(logits[None], targets[i : i + 1])
                torch.testing.assert_close(got[i], ref, rtol=1e-4, atol=1e-4)
                if moved is not None:
                    torch.testing.assert_close(moved[layer, 0, -1], z[i] + alpha * (zm[i] - z[i]), rtol=1e-4, atol=1e-5)
