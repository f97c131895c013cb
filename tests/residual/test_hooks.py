"""The one hook primitive, `hooks`, point by point on every family and attention implementation: what each named
point sees agrees with the others and with an independent raw hook, and its replacements act on the model."""

from __future__ import annotations

import pytest
import torch
from conftest import FAMILY_ATTN, tiny_model

from helpers.lm.families import attn_update_module, halfstep_module
from helpers.residual.hooks import capture_halfsteps, hooks, pad_batch

ROWS = [[5, 9, 2, 7, 11, 3], [4, 8, 1]]


@pytest.mark.parametrize(("family", "attn"), FAMILY_ATTN)
def test_points_agree_with_each_other_and_with_raw_hooks(family, attn):
    lm = tiny_model(family, attn=attn)
    ids, mask = pad_batch(ROWS)
    pre, post, mid = {}, {}, {}
    with hooks(lm, resid_pre=lambda i, h, named: pre.__setitem__(i, h.detach().clone()),
               resid_post=lambda i, out: post.__setitem__(i, out.detach().clone()),
               resid_mid=lambda i, x: mid.__setitem__(i, x.detach().clone())), torch.no_grad():
        lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
    for i in range(lm.n_layers - 1):  # a block's output is the next block's input
        torch.testing.assert_close(post[i], pre[i + 1])
    raw = {}  # an independent raw pre-hook on the last block
    handle = lm.blocks[-1].register_forward_pre_hook(
        lambda m, args, kwargs: raw.__setitem__("x", (args[0] if args else kwargs["hidden_states"]).detach().clone()),
        with_kwargs=True)
    try:
        with torch.no_grad():
            lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
    finally:
        handle.remove()
    torch.testing.assert_close(pre[lm.n_layers - 1], raw["x"])
    has_mid = halfstep_module(lm.family, lm.model.config) is not None
    assert bool(mid) == has_mid
    if has_mid:
        _, mids = capture_halfsteps(lm, ids, mask)
        torch.testing.assert_close(mid[0].reshape(mids[0].shape), mids[0])


@pytest.mark.parametrize(("family", "attn"), FAMILY_ATTN)
def test_replacements_act_on_the_model(family, attn):
    """A tensor returned at resid_pre replaces the block's input; a zero returned at attn_out removes the attention
    half-step's update, so the state after attention equals the block's input."""
    lm = tiny_model(family, attn=attn)
    ids, mask = pad_batch(ROWS)
    with torch.no_grad():
        clean = lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    with hooks(lm, [1], resid_pre=lambda i, h, named: h * 2.0), torch.no_grad():
        doubled = lm.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    assert (doubled - clean).abs().max() > 1e-4
    if attn_update_module(lm.family, lm.model.config) is None:
        with pytest.raises(ValueError, match="attn_out"), hooks(lm, attn_out=lambda i, out: out):
            pass
        return
    seen = {}
    with hooks(lm, [1], resid_pre=lambda i, h, named: seen.__setitem__("z", h.detach().clone()),
               attn_out=lambda i, out: torch.zeros_like(out),
               resid_mid=lambda i, x: seen.__setitem__("mid", x.detach().clone())), torch.no_grad():
        lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
    torch.testing.assert_close(seen["mid"].reshape(seen["z"].shape), seen["z"])


def test_hooks_are_removed_on_exit_even_after_an_error():
    lm = tiny_model("llama")
    with pytest.raises(RuntimeError), hooks(lm, resid_pre=lambda i, h, named: None):
        raise RuntimeError("inside")
    assert all(not b._forward_pre_hooks for b in lm.blocks)
