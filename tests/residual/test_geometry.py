"""The per-token step geometry (notebook 09) against independent computations on every family x attention."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FAMILIES, FAMILY_ATTN, tiny_model

from helpers.lm.quantise import noisy_twin
from helpers.lm.twin import output_projections, untrained_twin
from helpers.residual.geometry import p_nondecrease_covariance_null, step_geometry, swap_partners
from helpers.residual.hooks import capture_residuals, pad_batch
from helpers.residual.records import analyse_batch
from helpers.stats.nulls import nondecreasing, p_nondecrease_random_direction

ROWS = [[5, 17, 3, 99, 42, 8, 61, 23, 7, 11, 2, 90], [4, 4, 8, 15, 16, 23, 42], [1, 2, 3, 4, 5, 6, 7, 8, 9]]


@pytest.mark.parametrize(("family", "attn"), FAMILY_ATTN)
def test_step_norms_and_identity_match_the_recorded_norms(family, attn):
    """|z_l| equals the analysis' own norms (a separate code path), and |z + dz|^2 = |z|^2 + 2<z, dz> + |dz|^2 gives
    the next layer's norm, for whole blocks and for the two half-steps in sequence."""
    lm = tiny_model(family, attn)
    geo = step_geometry(lm, ROWS, min_position=2)
    rec = analyse_batch(lm, ROWS, min_position=2, lens=False, logit_lens=False)
    keep = rec["position"] >= 2
    np.testing.assert_allclose(geo["block_z"], rec["norms"][keep, :-1], rtol=1e-5)
    nxt = np.sqrt(geo["block_z"] ** 2 + 2 * geo["block_dot"] + geo["block_dz"] ** 2)
    np.testing.assert_allclose(nxt, rec["norms"][keep, 1:], rtol=1e-5)
    assert np.array_equal(nondecreasing(geo["block_dot"], geo["block_dz"]),
                          rec["norms"][keep, 1:] >= rec["norms"][keep, :-1]) or np.allclose(
        rec["norms"][keep, 1:], rec["norms"][keep, :-1], rtol=1e-6)
    if "attn_z" in geo:  # the two half-steps compose to the block
        np.testing.assert_allclose(geo["attn_z"], geo["block_z"], rtol=1e-6)
        mid = np.sqrt(geo["attn_z"] ** 2 + 2 * geo["attn_dot"] + geo["attn_dz"] ** 2)
        np.testing.assert_allclose(geo["mlp_z"], mid, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_swapped_updates_are_other_tokens_updates(family):
    """<z_n, dz_m> for the recorded partner m, recomputed from the captured states by hand."""
    lm = tiny_model(family)
    geo = step_geometry(lm, ROWS, min_position=2, seed=3)
    ids, mask = pad_batch(ROWS)
    states = capture_residuals(lm, ids, mask).states.double()
    r, c = np.nonzero(mask.numpy() * (np.arange(mask.shape[1]) >= 2))
    same, other = swap_partners(r, seed=3)
    z = states[:, r, c]                      # [L+1, N, D]
    dz = z[1:] - z[:-1]
    for name, partner in (("same", same), ("other", other)):
        expect = torch.einsum("lnd,lnd->nl", z[:-1], dz[:, partner]).numpy()
        np.testing.assert_allclose(geo[f"block_{name}_dot"], expect, rtol=1e-5, atol=1e-9)
        np.testing.assert_allclose(geo[f"block_{name}_dz"], torch.linalg.vector_norm(dz[:, partner], dim=-1).T.numpy(),
                                   rtol=1e-6)


def test_swap_partners_stay_in_or_leave_their_text():
    rows = np.repeat([0, 1, 2], [5, 1, 4])
    same, other = swap_partners(rows, seed=0)
    assert same[5] == -1  # a text of one token has no same-text partner
    has = same >= 0
    assert np.all(rows[same[has]] == rows[has]) and np.all(same[has] != np.arange(10)[has])
    assert np.all(rows[other] != rows)
    assert np.all(swap_partners(np.zeros(4, dtype=int))[1] == -1)  # one text: no other-text partner


@pytest.mark.parametrize("family", FAMILIES)
def test_zero_output_twin_has_no_updates(family):
    """Zeroed output projections: every update is exactly 0 and no norm changes."""
    lm = tiny_model(family)
    twin = untrained_twin(lm, seed=0, zero_output=True)
    assert len(output_projections(twin.blocks[0])) == 2
    geo = step_geometry(twin, ROWS, min_position=1)
    assert np.all(geo["block_dz"] == 0) and np.all(nondecreasing(geo["block_dot"], geo["block_dz"]))


def test_output_projections_are_the_sublayers_last_matrices():
    names = {"gpt2": {"c_proj"}, "llama": {"o_proj", "down_proj"}, "qwen2": {"o_proj", "down_proj"},
             "gemma3": {"o_proj", "down_proj"}}
    for family, expect in names.items():
        block = tiny_model(family).blocks[0]
        found = {n.split(".")[-1] for n, m in block.named_modules() if any(m is p for p in output_projections(block))}
        assert found == expect, family


def test_noisy_twin_has_the_requested_relative_error():
    lm = tiny_model("llama")
    name = "model.layers.0.mlp.up_proj.weight"
    noisy = noisy_twin(lm, {name: 0.05}, seed=1)
    w, v = dict(lm.model.named_parameters())[name], dict(noisy.model.named_parameters())[name]
    assert float((v - w).norm() / w.norm()) == pytest.approx(0.05, rel=1e-4)
    other = "model.layers.0.mlp.down_proj.weight"
    assert torch.equal(dict(lm.model.named_parameters())[other], dict(noisy.model.named_parameters())[other])


def test_covariance_null_matches_the_closed_form_when_updates_are_isotropic():
    """With isotropic updates the covariance-matched null is the uniform-direction null, whose chance has a closed
    form: the Monte Carlo estimate agrees within its error; with updates confined to a few directions orthogonal to
    the stream it gives ~100% at any step size below 2 (cos ~ 0 >= -r/2), which the isotropic null does not."""
    rng = np.random.default_rng(0)
    d, n = 8, 4000
    z = rng.standard_normal((n, d))
    dz = rng.standard_normal((n, d)) * 1.5  # |dz| / |z| around 1.5: the threshold -r/2 matters
    p = p_nondecrease_covariance_null(z, dz, np.random.default_rng(1), draws=512)
    r = np.linalg.norm(dz, axis=1) / np.linalg.norm(z, axis=1)
    closed = p_nondecrease_random_direction(r, d)
    assert abs(p.mean() - closed.mean()) < 0.01
    flat = np.zeros((n, d))
    flat[:, :2] = rng.standard_normal((n, 2)) * 0.5
    z_off = np.zeros((n, d))
    z_off[:, 4:] = rng.standard_normal((n, 4)) + 3.0
    q = p_nondecrease_covariance_null(z_off, flat, np.random.default_rng(2))
    assert q.min() == 1.0 and p_nondecrease_random_direction(np.linalg.norm(flat, axis=1) / np.linalg.norm(
        z_off, axis=1), d).mean() < 0.99
