"""Descent test: gradient of the Eq. 14 inner loss against finite differences, half-step states,
random baselines, the descent share of hand-made cases, and the untrained twin."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAMILIES, SMOKE, tiny_model

from helpers.experiments import descent, descent_tables
from helpers.lm.families import halfstep_module
from helpers.lm.twin import untrained_twin
from helpers.residual import descent_steps, hooks, lens
from helpers.residual.hooks import pad_batch
from helpers.residual.lens import inner_losses

# the block submodule whose output is the FFN's contribution to the residual (zeroed: the block returns z_mid)
FFN_OUT = {"gpt2": "mlp", "llama": "mlp", "qwen2": "mlp", "gemma3": "mlp", "gpt_neox": "mlp", "opt": "fc2"}
ROWS = [[5, 17, 3, 44, 9, 61, 2], [8, 1, 90, 33, 12], [7, 7, 25, 64, 70, 11, 38, 50]]
TARGETS = [13, 40, 6]


def _tiny64(family: str):
    lm = tiny_model(family, "eager")
    lm.model.double()
    return lm


def _batch(lm, rows=ROWS):
    ids, mask = pad_batch(rows)
    return ids, mask, mask.sum(1) - 1, torch.tensor(TARGETS[: len(rows)])


def _sequential_neox():
    lm = _tiny64("gpt_neox")
    lm.model.config.use_parallel_residual = False
    for blk in lm.blocks:
        blk.use_parallel_residual = False
    return lm


@pytest.mark.parametrize("family", FAMILIES)
def test_gradient_matches_finite_differences(family, one_thread):
    lm = _tiny64(family)
    ids, mask, last, targets = _batch(lm)
    cap, _ = hooks.capture_halfsteps(lm, ids, mask)
    layers = [0, lm.n_layers - 1]
    states = cap.states[layers]
    loss, grad = lens.inner_loss_grad(lm, states, cap.block_kwargs, last, targets)
    assert loss.dtype == grad.dtype == torch.float64
    rows = torch.arange(len(ROWS))
    z = states[:, rows, last].clone()
    v = torch.randn(z.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    v = v / v.norm(dim=-1, keepdim=True) * z.norm(dim=-1, keepdim=True)  # a step relative to the state's norm
    # RMSNorm and eager softmax of several families compute in float32 even in a float64 model: a finite
    # difference below ~1e-4 then sees float32 noise, so eps = 1e-3 (truncation ~1e-5) and tolerance 1e-3
    eps = 1e-3
    plus, _ = lens.inner_loss_grad(lm, states, cap.block_kwargs, last, targets, current=z + eps * v, grad=False)
    minus, _ = lens.inner_loss_grad(lm, states, cap.block_kwargs, last, targets, current=z - eps * v, grad=False)
    fd = (plus - minus) / (2 * eps)
    torch.testing.assert_close(fd, (grad * v).sum(-1), rtol=1e-3, atol=1e-4)
    assert (grad * v).sum(-1).abs().min() > 1e-3  # a non-trivial directional derivative
    # the loss is the Eq. 14 lens value of the uncut text (the prefix cut changes nothing before the token)
    full = hooks.capture_halfsteps(lm, *pad_batch([r + [1, 2, 3] for r in ROWS]))[0]
    eq14 = inner_losses(lm, full, rows, last, targets)[layers]
    torch.testing.assert_close(loss, eq14.to(loss.dtype), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3"])
def test_gradient_is_the_own_partial_derivative(family, one_thread):
    """Batched rows = each row alone; the other positions are constants (autograd on one position only)."""
    lm = _tiny64(family)
    ids, mask, last, targets = _batch(lm)
    cap, _ = hooks.capture_halfsteps(lm, ids, mask)
    _, grad = lens.inner_loss_grad(lm, cap.states[:2], cap.block_kwargs, last, targets, token_budget=16)
    for b, row in enumerate(ROWS):
        i, m, lst, t = _batch(lm, [row])
        c, _ = hooks.capture_halfsteps(lm, i, m)
        _, g1 = lens.inner_loss_grad(lm, c.states[:2], c.block_kwargs, lst, torch.tensor([TARGETS[b]]))
        torch.testing.assert_close(grad[:, b], g1[:, 0], rtol=1e-5, atol=1e-7)  # float32 inside RMSNorm
        x = c.states[0].clone().requires_grad_(True)
        kw = lens._plain(c.block_kwargs)
        y = lm.logits(lm.call_block(lm.n_layers - 1, x, kw)[0, -1])
        loss = torch.nn.functional.cross_entropy(y[None], torch.tensor([TARGETS[b]]))
        (gx,) = torch.autograd.grad(loss, x)
        torch.testing.assert_close(grad[0, b], gx[0, -1], rtol=1e-5, atol=1e-7)
        assert gx[0, :-1].abs().sum() > 0  # the prefix does influence the loss: only its state is held fixed


@pytest.mark.parametrize("family", FAMILIES + ["gpt_neox_sequential"])
def test_halfstep_states(family, one_thread):
    lm = _sequential_neox() if family == "gpt_neox_sequential" else _tiny64(family)
    ids, mask, last, _ = _batch(lm)
    cap, mid = hooks.capture_halfsteps(lm, ids, mask)
    if family == "gpt_neox":  # parallel residual: no state between attention and FFN
        assert halfstep_module(lm.family, lm.model.config) is None and mid is None
        return
    z_in, z_out = cap.states[:-1], cap.states[1:]
    assert mid.shape == z_in.shape
    torch.testing.assert_close((mid - z_in) + (z_out - mid), z_out - z_in, rtol=0, atol=1e-12)
    # independent recomputation: the last block re-run with its FFN contribution zeroed returns z_mid
    fam = "gpt_neox" if family.startswith("gpt_neox") else family
    ffn = getattr(lm.blocks[-1], FFN_OUT[fam])
    handle = ffn.register_forward_hook(lambda mod, args, out: torch.zeros_like(out))
    try:
        with torch.no_grad():
            again = lm.call_block(lm.n_layers - 1, cap.states[-2], lens._plain(cap.block_kwargs))
    finally:
        handle.remove()
    torch.testing.assert_close(again, mid[-1], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(mid, z_in) and not torch.allclose(mid, z_out)


def test_gemma3_mid_is_after_the_post_attention_norm(one_thread):
    lm = _tiny64("gemma3")
    ids, mask, _, _ = _batch(lm)
    cap, mid = hooks.capture_halfsteps(lm, ids, mask)
    blk, kw = lm.blocks[-1], lens._plain(cap.block_kwargs)
    z = cap.states[-2]
    with torch.no_grad():
        attn = blk.self_attn(blk.input_layernorm(z), position_embeddings=kw["position_embeddings"],
                             attention_mask=kw["attention_mask"])[0]
    torch.testing.assert_close(mid[-1], z + blk.post_attention_layernorm(attn), rtol=1e-12, atol=1e-12)


def test_random_directions_centred_at_zero():
    gen = torch.Generator().manual_seed(0)
    dz = torch.randn(400, 64, dtype=torch.float64, generator=gen) * torch.linspace(0.1, 10, 400)[:, None]
    g = torch.randn(400, 64, dtype=torch.float64, generator=gen)
    r = descent_steps.same_norm_directions(dz, 20, gen)
    torch.testing.assert_close(r.norm(dim=-1), dz.norm(dim=-1).expand(20, -1))
    cos = descent_steps._cos(r, -g)
    assert abs(cos.mean().item()) < 0.01 and abs(cos.std().item() - 64**-0.5) < 0.01
    assert abs(((r * g).sum(-1) < 0).double().mean().item() - 0.5) < 0.02


def test_run_descent_records_and_batching(one_thread, tmp_path):
    lm = _tiny64("llama")
    toks = descent.TokenSample(["a", "a", "b"], [0, 1, 0], ROWS, TARGETS)
    rec = descent.run_descent(lm, toks, n_random=3, batch_tokens=4096, cache_dir=tmp_path)
    small = descent.run_descent(lm, toks, n_random=3, batch_tokens=8, token_budget=8)
    assert len(rec) == 3 * lm.n_layers and set(rec.third) == {"first", "middle", "last"}
    exact = [c for c in rec if not c.startswith("r") and rec[c].dtype.kind == "f"]
    pd.testing.assert_frame_equal(rec[exact], small[exact], rtol=1e-5)
    assert (rec.descent_block == (rec.cos_block > 0)).all() and (rec.descent_ffn == (rec.cos_ffn > 0)).all()
    for _, d in rec.groupby(["dataset", "text"]):
        d = d.sort_values("layer")
        np.testing.assert_array_equal(d.lowers_block.to_numpy()[:-1], np.diff(d.loss_in.to_numpy()) < 0)
        np.testing.assert_array_equal(d.lowers_attn, d.loss_mid < d.loss_in)
        assert np.isnan(d.lowers_block.iloc[-1]) and np.isnan(d.rlowers_block.iloc[-1])
    cached = descent.run_descent(lm, toks, n_random=3, batch_tokens=4096, cache_dir=tmp_path)
    pd.testing.assert_frame_equal(cached, rec, rtol=1e-12)


def test_descent_step_is_counted_as_descent(one_thread):
    """Hand-made: a step along -g lowers the loss, is a descent direction; its cos with -g is 1."""
    lm = _tiny64("gpt2")
    ids, mask, last, targets = _batch(lm)
    cap, _ = hooks.capture_halfsteps(lm, ids, mask)
    loss, g = lens.inner_loss_grad(lm, cap.states[:1], cap.block_kwargs, last, targets)
    z = cap.states[:1, torch.arange(3), last]
    step = -1e-3 * g
    after, _ = lens.inner_loss_grad(lm, cap.states[:1], cap.block_kwargs, last, targets, current=z + step,
                                       grad=False)
    same, _ = lens.inner_loss_grad(lm, cap.states[:1], cap.block_kwargs, last, targets, current=z, grad=False)
    torch.testing.assert_close(same, loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(after - loss, (step * g).sum(-1), rtol=1e-2, atol=0)  # first order
    assert (after < loss).all() and torch.allclose(descent_steps._cos(step, -g), torch.ones(1, 3, dtype=torch.float64))
    assert ((-step * g).sum(-1) > 0).all()  # the opposite step is an ascent direction


def test_descent_shares_of_a_hand_made_table():
    rows = []
    for text in range(4):
        for layer in range(6):  # thirds: layers 0-1, 2-3, 4-5
            for weights in ("trained", "untrained twin"):
                good = weights == "trained" and (layer < 2 or text < 1)
                rows.append({"model": "m", "weights": weights, "dataset": "d", "text": text, "layer": layer,
                             "n_layers": 6, "cos_block": 0.5 if good else -0.1, "descent_block": float(good),
                             "lowers_block": float(good), "rcos_block": 0.0, "rdescent_block": 0.5,
                             "rlowers_block": 0.25, "norm_in": 1.0, "norm_out": 2.0 if layer % 2 else 0.5})
    rec = pd.DataFrame(rows)
    rec["third"] = descent_tables.layer_thirds(6)[rec.layer]
    t = descent_tables.descent_by_third(rec).set_index("third")
    assert t.descent_pct.tolist() == [100.0, 25.0, 25.0] and (t.twin_descent_pct == 0).all()
    assert (t.random_descent_pct == 50).all() and (t.random_lowers_pct == 25).all() and (t.tokens == 4).all()
    a = descent_tables.norm_attribution(rec).set_index("weights").loc["trained"]
    assert a.block_decrease_pct == 60.0 and np.isnan(a.of_which_attn_decreases_pct)  # layers 0, 2, 4 of 0..4
    assert a.growth_rate_median == pytest.approx(1.0)  # blocks 1..4: x2, x0.5, x2, x0.5
    assert "100%" in descent_tables.reading(descent_tables.descent_by_third(rec), descent_tables.norm_attribution(rec))
    assert [list(descent_tables.layer_thirds(n)).count("first") for n in (30, 18, 4)] == [10, 6, 2]


def test_untrained_twin_is_seeded_and_untrained():
    lm = tiny_model("llama", "eager", seed=3)
    a, b = untrained_twin(lm, seed=0), untrained_twin(lm, seed=0)
    assert a.fingerprint == b.fingerprint != lm.fingerprint and a.family == lm.family
    for pa, pb, pt in zip(a.model.parameters(), b.model.parameters(), lm.model.parameters(), strict=True):
        assert torch.equal(pa, pb) and (pa.numel() == 1 or not torch.equal(pa, pt) or pt.std() == 0)
    assert a.n_layers == lm.n_layers and a.tokenizer is lm.tokenizer and a.dtype == lm.dtype
    assert untrained_twin(lm, seed=1).fingerprint != a.fingerprint


def test_load_or_skip_skips_an_untrained_natural_model(tmp_path, capsys):
    from helpers.experiments.zoo import load_or_skip

    assert load_or_skip("natural", SMOKE, tmp_path) is None
    assert "not trained yet" in capsys.readouterr().out
