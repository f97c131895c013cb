"""The calibrated inner-loss statistics against independent computations and known answers."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from helpers.stats.inner import (
    FLAT,
    calibration,
    interior_trend,
    kendall_tau_rows,
    paired_trend_difference,
    trend_verdict,
    unigram_entropy,
)


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


def test_trend_rule_can_come_out_every_way():
    """falls / rises / flat / no clear trend from the tau interval, and the paired difference from the twin
    demotes a fall the untrained network shows as well."""
    rng = np.random.default_rng(1)
    layers = np.arange(12)
    groups = np.repeat(np.arange(40), 5)
    falling = 20 - layers[None, :] + rng.normal(0, 1, (200, 12))
    flat = 10 + rng.normal(0, 1, (200, 12))
    rising = 5 + layers[None, :] + rng.normal(0, 1, (200, 12))
    f, z, r = (interior_trend(x, groups, n_boot=200) for x in (falling, flat, rising))
    assert f["tau_hi"] < 0 and r["tau_lo"] > 0 and z["tau_lo"] < 0 < z["tau_hi"]
    assert trend_verdict(f["tau_lo"], f["tau_hi"], -0.8, -0.6) == "falls across layers"
    assert trend_verdict(f["tau_lo"], f["tau_hi"]) == "falls across layers"  # no twin to pair with
    assert trend_verdict(f["tau_lo"], f["tau_hi"], -0.05, 0.02) == "falls, no more than the untrained twin"
    assert trend_verdict(z["tau_lo"], z["tau_hi"], -0.1, 0.1) == "flat"
    assert trend_verdict(r["tau_lo"], r["tau_hi"], 0.5, 0.7) == "rises across layers"
    assert trend_verdict(-2 * FLAT, FLAT) == "no clear trend"  # straddles 0, too wide to call flat


def test_paired_trend_difference_is_the_mean_of_per_token_differences():
    """The paired difference equals the difference of the two runs' mean taus on shared tokens (an independent
    computation with scipy's Kendall tau), and a run paired with itself differs by exactly 0."""
    rng = np.random.default_rng(2)
    n, layers = 60, 8
    base = {"target": np.arange(n), "position": np.full(n, 10), "text_id": np.repeat(np.arange(20), 3)}
    a = base | {"inner_loss": 10 - np.arange(layers)[None, :] * 0.3 + rng.normal(0, 1, (n, layers))}
    b = base | {"inner_loss": 10 + rng.normal(0, 1, (n, layers))}
    d = paired_trend_difference(a, b, 0, n_boot=200)
    ref = np.mean([stats.kendalltau(np.arange(layers - 2), x[1:-1]).statistic for x in a["inner_loss"]]) - np.mean(
        [stats.kendalltau(np.arange(layers - 2), x[1:-1]).statistic for x in b["inner_loss"]])
    assert d["tau_diff"] == pytest.approx(ref, abs=1e-12) and d["tau_diff_lo"] < d["tau_diff"] < d["tau_diff_hi"]
    same = paired_trend_difference(a, a, 0, n_boot=50)
    assert same["tau_diff"] == 0.0


def test_calibration_finds_the_layer_below_uniform():
    vocab = 1000  # ln|V| = 6.91
    inner = np.tile([30.0, 25.0, 12.0, 9.0, 6.0, 3.0, 1.0], (50, 1))
    cal = calibration(inner, np.arange(50), np.arange(50), vocab, n_boot=50)
    assert cal["first_layer_below_uniform"] == 4 and cal["last_k_below_uniform"] == 3
    assert cal["median_first"] == 30.0 and cal["worse_than_uniform_mid_pct"] == 100.0
    assert cal["tau"] == -1.0 and cal["ln_vocab"] == pytest.approx(np.log(1000))
