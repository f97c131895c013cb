"""Per-token gradients in one backward pass (own-path attention) against one backward per token."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from conftest import FAMILY_ATTN, tiny_model
from per_text_grads import inner_loss_grads_per_text

from helpers.residual import pertoken
from helpers.residual.hooks import capture_residuals, pad_batch
from helpers.residual.lens import inner_loss_grad, inner_losses
from helpers.residual.pertoken import (
    own_path_attention,
    per_token_grads,
    per_token_grads_naive,
)
from helpers.residual.pertoken_lens import inner_losses_selected

# three rows of different lengths (right padding); longer than gemma3's sliding window of 4
ROWS = [[5, 9, 3, 7, 11, 2, 40, 17], [8, 1, 33, 4], [6, 60, 70, 2, 2, 9]]
TOL = 1e-5


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Within TOL, relative per element and absolute relative to the largest entry."""
    scale = float(expected.abs().max()) or 1.0
    torch.testing.assert_close(actual, expected, rtol=TOL, atol=TOL * scale, msg=lambda m: f"{what}: {m}")


def _own_losses(lm, rows) -> torch.Tensor:
    """Next-token losses of every real token with a next token, from a plain forward pass (own attention)."""
    ids, mask = pad_batch(rows)
    with torch.no_grad():
        logits = lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
    return torch.cat([F.cross_entropy(logits[b, : len(r) - 1], ids[b, 1 : len(r)], reduction="none")
                      for b, r in enumerate(rows)])


def _naive(lm, rows) -> tuple[torch.Tensor, torch.Tensor]:
    refs = [per_token_grads_naive(lm, r) for r in rows]
    return torch.cat([r["loss"] for r in refs]), torch.cat([r["grads"] for r in refs])


@pytest.mark.parametrize("family, attn", FAMILY_ATTN)
def test_one_pass_equals_one_backward_per_token(family, attn, one_thread):
    lm = tiny_model(family, attn)
    out = per_token_grads(lm, ROWS)
    n = sum(len(r) - 1 for r in ROWS)
    assert out["grads"].shape == (n, lm.n_layers + 1, lm.d_model)
    assert out["layers"] == list(range(lm.n_layers + 1))
    assert out["row"].tolist() == [b for b, r in enumerate(ROWS) for _ in range(len(r) - 1)]
    assert out["pos"].tolist() == [t for r in ROWS for t in range(len(r) - 1)]
    loss, grads = _naive(lm, ROWS)
    for i, layer in enumerate(out["layers"]):
        _close(out["grads"][:, i], grads[:, i], f"{family}-{attn} layer {layer}")
    assert grads.abs().amax(dim=-1).min() > 0, "every token has a non-zero gradient at every layer"
    _close(out["loss"], _own_losses(lm, ROWS), f"{family}-{attn} losses vs the model's own")
    _close(loss, out["loss"], f"{family}-{attn} naive losses")


@pytest.mark.parametrize("family, attn", FAMILY_ATTN)
def test_layer_subset(family, attn, one_thread):
    lm = tiny_model(family, attn)
    full = per_token_grads(lm, ROWS[1:])
    part = per_token_grads(lm, ROWS[1:], layers=[lm.n_layers, 1])
    assert part["layers"] == [lm.n_layers, 1]
    _close(part["grads"], full["grads"][:, [lm.n_layers, 1]], f"{family}-{attn} layer subset")


@pytest.mark.parametrize("family, attn", FAMILY_ATTN)
def test_context_manager_restores_model(family, attn, one_thread):
    lm = tiny_model(family, attn)
    ids, mask = pad_batch(ROWS)
    with torch.no_grad():
        before = lm.model(input_ids=ids, attention_mask=mask).logits
    with own_path_attention(lm):
        assert lm.model.config._attn_implementation == pertoken.OWN_PATH
        with torch.no_grad():
            inside = lm.model(input_ids=ids, attention_mask=mask).logits
    assert lm.model.config._attn_implementation == attn
    per_token_grads(lm, ROWS)
    assert lm.model.config._attn_implementation == attn
    with torch.no_grad():
        after = lm.model(input_ids=ids, attention_mask=mask).logits
    assert torch.equal(before, after)
    real = mask.bool()
    _close(inside[real], before[real], f"{family}-{attn} own-path forward values")
    assert all(p.grad is None and p.requires_grad for p in lm.model.parameters())


def test_context_manager_restores_on_error():
    lm = tiny_model("llama", "eager")
    with pytest.raises(RuntimeError, match="boom"), own_path_attention(lm):
        raise RuntimeError("boom")
    assert lm.model.config._attn_implementation == "eager"


@pytest.mark.parametrize("family, attn", FAMILY_ATTN)
def test_plain_summed_loss_is_not_per_token(family, attn, one_thread, monkeypatch):
    """Without the own-path attention the summed-loss gradient mixes in later tokens' losses: the test above
    would fail. Only the last scored token of a row (no later loss) keeps its own gradient."""
    lm = tiny_model(family, attn)
    row = ROWS[0]
    ref = per_token_grads_naive(lm, row)
    monkeypatch.setattr(pertoken, "own_path_attention", lambda lm: nullcontext(lm))
    plain = per_token_grads(lm, [row])
    _close(plain["loss"], ref["loss"], "losses")
    _close(plain["grads"][-1], ref["grads"][-1], "last scored token")
    gap = (plain["grads"][:-1] - ref["grads"][:-1]).abs().amax()
    assert gap > 100 * TOL * float(ref["grads"].abs().max())


def test_bad_input():
    lm = tiny_model("llama", "sdpa")
    with pytest.raises(ValueError, match="layers"):
        per_token_grads(lm, ROWS, layers=[lm.n_layers + 1])
    with pytest.raises(ValueError, match="2 tokens"):
        per_token_grads(lm, [[3, 4], [5]])
    with pytest.raises(ValueError, match="2 tokens"):
        per_token_grads_naive(lm, [5])


def _scored(rows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(row, column, next token) of every real token that has a next token."""
    picked = [(b, t, r[t + 1]) for b, r in enumerate(rows) for t in range(len(r) - 1)]
    return tuple(torch.tensor(x) for x in zip(*picked, strict=True))


def _cut_reference(lm, rows, r, c, t, layers):
    """inner_loss_grad on one row per selected token, cut right after it (the row ends at the token)."""
    cut = [rows[b][: p + 1] for b, p in zip(r.tolist(), c.tolist(), strict=True)]
    ref = capture_residuals(lm, *pad_batch(cut))
    last = torch.tensor([len(x) - 1 for x in cut])
    return inner_loss_grad(lm, ref.states[layers], ref.block_kwargs, last, t)


@pytest.mark.parametrize("family, attn", FAMILY_ATTN)
def test_inner_loss_grads_per_text_equal_one_row_per_token(family, attn, one_thread):
    lm = tiny_model(family, attn)
    cap = capture_residuals(lm, *pad_batch(ROWS))
    r, c, t = _scored(ROWS)
    loss, grads = inner_loss_grads_per_text(lm, cap, r, c, t)
    assert loss.shape == (lm.n_layers, r.numel()) and grads.shape == (lm.n_layers, r.numel(), lm.d_model)
    assert lm.model.config._attn_implementation == attn
    _close(loss, inner_losses(lm, cap, r, c, t), f"{family}-{attn} losses vs inner_losses")
    ref_loss, ref_grads = _cut_reference(lm, ROWS, r, c, t, list(range(lm.n_layers)))
    _close(loss, ref_loss, f"{family}-{attn} losses vs inner_loss_grad")
    for layer in range(lm.n_layers):
        _close(grads[layer], ref_grads[layer], f"{family}-{attn} inner-loss gradient, layer {layer}")
    assert grads.abs().amax(dim=-1).min() > 0, "every token has a non-zero gradient at every layer"
    assert all(p.grad is None and p.requires_grad for p in lm.model.parameters())


@pytest.mark.parametrize("family, attn", FAMILY_ATTN)
def test_inner_loss_grads_per_text_subset_unpadded(family, attn, one_thread):
    """One unpadded row (SDPA then captures no mask), some tokens, a layer subset, one layer per call."""
    lm = tiny_model(family, attn)
    rows = [ROWS[0]]
    cap = capture_residuals(lm, *pad_batch(rows))
    r, c, t = (x[[6, 1, 4]] for x in _scored(rows))
    layers = [lm.n_layers - 1, 0]
    with torch.inference_mode():
        loss, grads = inner_loss_grads_per_text(lm, cap, r, c, t, layers=layers, token_budget=1)
    assert loss.shape == (2, 3) and grads.shape == (2, 3, lm.d_model)
    _close(loss, inner_losses(lm, cap, r, c, t)[layers], f"{family}-{attn} subset losses")
    ref_loss, ref_grads = _cut_reference(lm, rows, r, c, t, layers)
    _close(loss, ref_loss, f"{family}-{attn} subset losses vs inner_loss_grad")
    _close(grads, ref_grads, f"{family}-{attn} subset gradients")


def test_inner_loss_grads_per_text_bad_layers():
    lm = tiny_model("llama", "sdpa")
    cap = capture_residuals(lm, *pad_batch(ROWS))
    r, c, t = _scored(ROWS)
    with pytest.raises(ValueError, match="layers"):
        inner_loss_grads_per_text(lm, cap, r, c, t, layers=[lm.n_layers])


@pytest.mark.parametrize("family, attn", FAMILY_ATTN)
def test_inner_losses_selected_equal_inner_losses(family, attn, one_thread):
    """The last block at the selected positions only: every token, a few tokens in some rows (a row with none),
    one unpadded row (SDPA then captures no mask), one layer per call."""
    lm = tiny_model(family, attn)
    cap = capture_residuals(lm, *pad_batch(ROWS))
    r, c, t = _scored(ROWS)
    _close(inner_losses_selected(lm, cap, r, c, t), inner_losses(lm, cap, r, c, t), f"{family}-{attn} all tokens")
    some = torch.tensor([9, 0, 5, 3, 6])  # rows 0 and 1 only, out of order
    sel = (r[some], c[some], t[some])
    _close(inner_losses_selected(lm, cap, *sel, token_budget=1), inner_losses(lm, cap, *sel),
           f"{family}-{attn} some tokens")
    one = capture_residuals(lm, *pad_batch(ROWS[:1]))
    sel = tuple(x[[6, 2, 4]] for x in _scored(ROWS[:1]))
    _close(inner_losses_selected(lm, one, *sel), inner_losses(lm, one, *sel), f"{family}-{attn} unpadded row")
