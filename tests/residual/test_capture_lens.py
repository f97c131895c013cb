"""Residual capture and the last-block lens on tiny models of every supported family and the real model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import FAMILIES, FAMILY_ATTN, tiny_model

from helpers.residual import records
from helpers.residual.hooks import bind_block_call, capture_residuals, pad_batch
from helpers.residual.lens import inner_losses
from helpers.residual.records import analyse_batch

ROWS = [[5, 17, 3, 99, 42, 8, 61, 23, 7, 11, 2, 90], [4, 4, 8, 15, 16, 23, 42], [1, 2, 3, 4, 5, 6, 7, 8, 9]]


def model_token_loss(lm, row: list[int]) -> np.ndarray:
    """The model's own next-token loss for one unpadded row."""
    ids = torch.tensor([row])
    with torch.no_grad():
        logits = lm.model(ids).logits[0].float()
    return F.cross_entropy(logits[:-1], ids[0, 1:], reduction="none").numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_states_match_hf_hidden_states_and_final_norm(family):
    lm = tiny_model(family)
    ids, mask = pad_batch(ROWS[:1])
    cap = capture_residuals(lm, ids, mask)
    with torch.no_grad():
        hs = lm.model(ids, output_hidden_states=True).hidden_states
    assert cap.states.shape == (lm.n_layers + 1, 1, len(ROWS[0]), lm.d_model)
    for layer in range(lm.n_layers):
        torch.testing.assert_close(cap.states[layer], hs[layer])
    # HF's last entry is AFTER the final norm: it differs from our pre-norm state exactly by that norm.
    assert not torch.allclose(cap.states[-1], hs[-1])
    torch.testing.assert_close(lm.final_norm(cap.states[-1]), hs[-1])


def test_gpt2_states_match_hand_written_forward():
    lm = tiny_model("gpt2")
    tr = lm.model.transformer
    ids, mask = pad_batch(ROWS[:1])
    cap = capture_residuals(lm, ids, mask)
    pos = torch.arange(ids.shape[1])
    h = tr.wte(ids) + tr.wpe(pos)[None]
    torch.testing.assert_close(cap.states[0], h)
    with torch.no_grad():
        for i, blk in enumerate(tr.h):
            x = blk.ln_1(h)
            q, k, v = blk.attn.c_attn(x).split(lm.d_model, dim=-1)
            heads = lambda t: t.view(1, -1, 4, lm.d_model // 4).transpose(1, 2)  # noqa: E731
            att = F.scaled_dot_product_attention(heads(q), heads(k), heads(v), is_causal=True)
            h = h + blk.attn.c_proj(att.transpose(1, 2).reshape(1, -1, lm.d_model))
            h = h + blk.mlp(blk.ln_2(h))
            torch.testing.assert_close(cap.states[i + 1], h, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("family", "attn"), FAMILY_ATTN)
def test_lens_matches_model_loss(family, attn):
    """Inner loss at layer L-1 = the model's own per-token loss (the last block re-run with the real call's
    mask and positions); the same for final loss and logit lens at the last state."""
    lm = tiny_model(family, attn=attn)
    for row in ROWS:
        single = analyse_batch(lm, [row], min_position=2)
        has = single["target"] >= 0
        own = model_token_loss(lm, row)[single["position"][has]]
        np.testing.assert_allclose(single["inner_loss"][has, -1], own, rtol=0, atol=1e-4)
        np.testing.assert_allclose(single["final_loss"][has], own, rtol=0, atol=1e-4)
        np.testing.assert_allclose(single["logit_lens"][has, -1], own, rtol=0, atol=1e-4)
        # earlier layers really differ (the lens is not a copy of the final loss)
        assert np.abs(single["inner_loss"][has, 0] - own).max() > 1e-3


@pytest.mark.parametrize(("family", "attn"), FAMILY_ATTN)
def test_lens_batched_equals_unbatched(family, attn):
    lm = tiny_model(family, attn=attn)
    batched = analyse_batch(lm, ROWS, min_position=2)
    for b, row in enumerate(ROWS):
        single = analyse_batch(lm, [row], min_position=2)
        sel = batched["sample"] == b
        for key in ("norms", "inner_loss", "logit_lens", "final_loss", "position", "target"):
            np.testing.assert_allclose(batched[key][sel], single[key], rtol=1e-5, atol=1e-5, err_msg=key)


@pytest.mark.parametrize(("family", "attn"), FAMILY_ATTN)
def test_lens_layer_chunks_equal_one_call(family, attn):
    """Layers split over several last-block calls (a small token budget) = all layers stacked in one call."""
    lm = tiny_model(family, attn=attn)
    ids, mask = pad_batch(ROWS)
    cap = capture_residuals(lm, ids, mask)
    rows, cols = torch.nonzero(mask[:, :-1].bool(), as_tuple=True)
    targets = ids[rows, cols + 1]
    one = inner_losses(lm, cap, rows, cols, targets, token_budget=10**9)
    split = inner_losses(lm, cap, rows, cols, targets, token_budget=1)
    torch.testing.assert_close(split, one, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("family", "attn"), FAMILY_ATTN)
def test_bound_block_call_keeps_the_mask(family, attn):
    """Binding the real call to the block's signature names the attention mask however it was passed."""
    lm = tiny_model(family, attn=attn)
    seen = {}

    def hook(module, args, kwargs):
        seen["hidden"], seen["named"] = bind_block_call(module, args, kwargs)

    handle = lm.blocks[-1].register_forward_pre_hook(hook, with_kwargs=True)
    ids, mask = pad_batch(ROWS[:1])
    with torch.no_grad():
        lm.model(input_ids=ids, attention_mask=mask, use_cache=False)
    handle.remove()
    assert seen["hidden"].shape == (1, len(ROWS[0]), lm.d_model)
    assert "attention_mask" in seen["named"] and seen["named"].get("use_cache") is False
    assert not {"past_key_values", "layer_past", "past_key_value"} & set(seen["named"])


def test_causal_mask_matters_for_the_lens():
    """A bare block call (no mask) attends both ways under eager attention; the captured kwargs do not."""
    lm = tiny_model("llama", attn="eager")
    ids, mask = pad_batch(ROWS[:1])
    cap = capture_residuals(lm, ids, mask)
    last = lm.n_layers - 1
    with torch.no_grad():
        right = lm.call_block(last, cap.states[0], cap.block_kwargs)
        bare = lm.call_block(last, cap.states[0], {"position_embeddings": cap.block_kwargs["position_embeddings"]})
    assert (right[0, :-1] - bare[0, :-1]).abs().max() > 1e-3
    rec = analyse_batch(lm, ROWS[:1], min_position=0)
    has = rec["target"] >= 0
    np.testing.assert_allclose(rec["inner_loss"][has, -1], model_token_loss(lm, ROWS[0]), rtol=1e-5, atol=1e-5)


def test_losses_only_from_min_position_norms_everywhere():
    lm = tiny_model("gpt2")
    rec = analyse_batch(lm, ROWS[:1], min_position=4)
    assert rec["position"].tolist() == list(range(len(ROWS[0])))
    assert np.isnan(rec["inner_loss"][:4]).all() and np.isnan(rec["inner_loss"][-1]).all()
    assert np.isfinite(rec["inner_loss"][4:-1]).all()
    assert (rec["norms"] > 0).all()


@pytest.mark.slow
def test_real_model_lens_equals_loss_and_batching(real_model):
    texts = ["The quick brown fox jumps over the lazy dog while the farmer watches from the porch.",
             "Stocks fell sharply on Monday as investors worried about rising interest rates."]
    rows = real_model.encode(texts, 32)
    batched = analyse_batch(real_model, rows, min_position=4)
    for b, row in enumerate(rows):
        single = analyse_batch(real_model, [row], min_position=4)
        sel = batched["sample"] == b
        np.testing.assert_allclose(batched["inner_loss"][sel], single["inner_loss"], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(batched["norms"][sel], single["norms"], rtol=1e-4)
        has = single["target"] >= 0
        own = model_token_loss(real_model, row)[single["position"][has]]
        np.testing.assert_allclose(single["inner_loss"][has, -1], own, rtol=1e-4, atol=1e-4)
    assert real_model.n_layers == 30 and real_model.family == "llama"


@pytest.mark.parametrize(("family", "attn"), FAMILY_ATTN)
def test_analysis_lens_selected_equals_full_rerun(family, attn, monkeypatch):
    """The analysis's lens (last block at the selected positions only) gives the full re-run's numbers, on a
    padded batch with a lens share; a block that cannot be queried at selected positions falls back to the
    full re-run."""
    lm = tiny_model(family, attn=attn)
    fast = analyse_batch(lm, ROWS, min_position=2, lens_share=0.5, keys=[3, 1, 4])
    ids, mask = pad_batch(ROWS)
    cap = capture_residuals(lm, ids, mask)
    chosen = ~np.isnan(fast["inner_loss"][:, 0])
    assert 0 < chosen.sum() < (fast["target"] >= 0).sum()
    rows = torch.from_numpy(fast["sample"][chosen]).long()
    cols = torch.from_numpy(fast["position"][chosen]).long()
    full = inner_losses(lm, cap, rows, cols, torch.from_numpy(fast["target"][chosen]).long())
    np.testing.assert_allclose(fast["inner_loss"][chosen], full.T.numpy(), rtol=1e-5, atol=1e-5)

    def unsupported(*args, **kwargs):
        raise NotImplementedError("no cache argument")

    monkeypatch.setattr(records, "inner_losses_selected", unsupported)
    fallback = analyse_batch(lm, ROWS, min_position=2, lens_share=0.5, keys=[3, 1, 4])
    np.testing.assert_allclose(fallback["inner_loss"], fast["inner_loss"], rtol=1e-5, atol=1e-5)
