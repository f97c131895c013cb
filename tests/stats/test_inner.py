"""The calibrated inner-loss statistics against independent computations and known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from helpers.stats.inner import calibration, interior_trend, kendall_tau_rows, trend_verdict, unigram_entropy


def test_kendall_tau_matches_scipy():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(20, 9))
    ours = kendall_tau_rows(v)
    ref = [stats.kendalltau(np.arange(9), row).statistic for row in v]  # no ties: tau-a = tau-b
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert kendall_tau_rows(np.arange(6.0)[None, ::-1])[0] == -1.0


def test_unigram_entropy_known_answers():
    assert unigram_entropy(np.array([3, 3, 3])) == 0.0
    assert unigram_entropy(np.arange(8)) == pytest.approx(np.log(8))


def test_trend_rule_can_come_out_either_way():
    rng = np.random.default_rng(1)
    layers = np.arange(12)
    groups = np.repeat(np.arange(40), 5)
    falling = 20 - layers[None, :] + rng.normal(0, 1, (200, 12))
    flat = 10 + rng.normal(0, 1, (200, 12))
    rising = 5 + layers[None, :] + rng.normal(0, 1, (200, 12))
    f, z, r = (interior_trend(x, groups, n_boot=200) for x in (falling, flat, rising))
    assert f["tau_hi"] < 0 and r["tau_lo"] > 0 and z["tau_lo"] < 0 < z["tau_hi"]
    assert trend_verdict(f["tau_lo"], f["tau_hi"], 0.01, 3) == "falls across layers"
    assert trend_verdict(f["tau_lo"], f["tau_hi"], -0.4, 3) == "falls only in the last 3 layers"  # the null falls too
    assert trend_verdict(z["tau_lo"], z["tau_hi"], 0.0, 2) == "falls only in the last 2 layers"
    assert trend_verdict(r["tau_lo"], r["tau_hi"], 0.0, 1).startswith("rises")


def test_calibration_finds_the_layer_below_uniform():
    vocab = 1000  # ln|V| = 6.91
    inner = np.tile([30.0, 25.0, 12.0, 9.0, 6.0, 3.0, 1.0], (50, 1))
    cal = calibration(inner, np.arange(50), np.arange(50), vocab, n_boot=50)
    assert cal["first_layer_below_uniform"] == 4 and cal["last_k_below_uniform"] == 3
    assert cal["median_first"] == 30.0 and cal["worse_than_uniform_mid_pct"] == 100.0
    assert cal["tau"] == -1.0 and cal["ln_vocab"] == pytest.approx(np.log(1000))
