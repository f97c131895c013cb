"""The untrained twin of every family: seeded, untrained, the same architecture, and it runs through the capture
and the lens like the model it copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import FAMILIES, tiny_model

from helpers.lm.twin import untrained_twin
from helpers.residual.records import analyse_batch

ROWS = [[5, 17, 3, 44, 9, 61, 2], [8, 1, 90, 33, 12]]


@pytest.mark.parametrize("family", FAMILIES)
def test_untrained_twin_is_seeded_and_differs_from_the_model(family):
    lm = tiny_model(family, seed=3)
    a, b, c = untrained_twin(lm, seed=0), untrained_twin(lm, seed=0), untrained_twin(lm, seed=1)
    sa, sb, sc, so = (m.model.state_dict() for m in (a, b, c, lm))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    assert any(not torch.equal(sa[k], so[k]) for k in sa)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert type(a.model) is type(lm.model) and a.n_layers == lm.n_layers and a.family == lm.family


@pytest.mark.parametrize("family", FAMILIES)
def test_twin_runs_through_capture_and_lens(family):
    twin = untrained_twin(tiny_model(family), seed=0)
    rec = analyse_batch(twin, ROWS, min_position=1)
    assert rec["norms"].shape == (sum(map(len, ROWS)), twin.n_layers + 1) and np.isfinite(rec["norms"]).all()
    has = rec["target"] >= 0
    assert np.isfinite(rec["inner_loss"][has]).all()
    # the lens at the last layer is the twin's own loss (Eq. 14 by construction)
    np.testing.assert_allclose(rec["inner_loss"][has, -1], rec["final_loss"][has], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("std", [0.005, 0.02, 0.0417])
def test_twin_built_with_a_given_sigma_has_weights_of_that_scale(std):
    lm = tiny_model("llama")
    twin = untrained_twin(lm, seed=0, init_std=std)
    w = torch.cat([twin.blocks[i].mlp.up_proj.weight.detach().flatten() for i in range(twin.n_layers)])
    assert abs(float(w.std()) / std - 1) < 0.1 and abs(float(w.mean())) < 0.1 * std
    assert twin.fingerprint != untrained_twin(lm, seed=0).fingerprint
