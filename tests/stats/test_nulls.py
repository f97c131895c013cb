"""The direction-randomised null against a simulation, the step decomposition against its identity, and the
Wilson interval and design effect on known cases."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.stats.nulls import (
    design_effect,
    nondecrease_margin,
    p_nondecrease_random_direction,
    predicted_rates,
    share_interval,
    wilson,
)


@pytest.mark.parametrize("d", [8, 64, 576])
@pytest.mark.parametrize("r", [0.05, 0.3, 1.0, 1.9])
def test_closed_form_null_equals_a_simulation_of_random_directions(d, r):
    rng = np.random.default_rng(d * 100 + int(10 * r))
    n = 200_000
    if d <= 64:  # whole random vectors: |z + dz| against |z| = 1
        dz = rng.standard_normal((n, d))
        dz *= r / np.linalg.norm(dz, axis=1, keepdims=True)
        dz[:, 0] += 1.0
        simulated = np.mean(np.linalg.norm(dz, axis=1) >= 1.0)
    else:  # the cosine of a uniform direction with a fixed axis: x1 / sqrt(x1^2 + chi2(d-1))
        x1 = rng.standard_normal(n)
        cos = x1 / np.sqrt(x1**2 + rng.chisquare(d - 1, n))
        simulated = np.mean(1 + 2 * r * cos + r * r >= 1.0)
    assert abs(100 * simulated - 100 * p_nondecrease_random_direction(r, d)) < 0.5  # within 0.5 pp


def test_large_steps_never_lower_the_norm_and_small_ones_are_a_coin_flip():
    assert p_nondecrease_random_direction(2.5, 16) == 1.0
    assert abs(p_nondecrease_random_direction(1e-9, 4096) - 0.5) < 1e-3


def test_decomposition_identity_on_recorded_like_data():
    rng = np.random.default_rng(0)
    z, dz = rng.standard_normal((500, 64)) * 3, rng.standard_normal((500, 64))
    m = nondecrease_margin(z, dz)
    nz, ndz = np.linalg.norm(z, axis=1), np.linalg.norm(dz, axis=1)
    lhs = np.linalg.norm(z + dz, axis=1) ** 2
    np.testing.assert_allclose(lhs, nz**2 + 2 * m["cos"] * nz * ndz + ndz**2, rtol=1e-12)
    np.testing.assert_array_equal(m["nondecreasing"], np.linalg.norm(z + dz, axis=1) >= nz - 1e-12)


def test_predicted_sequence_rate_is_the_product_of_steps():
    r = np.array([[0.1, 0.2, 3.0], [0.5, 0.5, 0.5]])
    out = predicted_rates(r, 32)
    np.testing.assert_allclose(out["p_sequence"], np.prod(out["p_step"], axis=1))
    assert out["p_step"][0, 2] == 1.0 and 0 < out["sequence_pct"] < out["pair_pct"] < 100


def test_wilson_known_cases_and_never_a_point():
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and 10 < hi < 20  # 0 of 20: [0, 16.1]
    lo, hi = wilson(20, 20)
    assert hi == 100.0 and 80 < lo < 90
    lo, hi = wilson(50, 100)
    assert abs(lo - 40.38) < 0.01 and abs(hi - 59.62) < 0.01  # the textbook value


def test_design_effect_grows_with_clustering():
    independent = design_effect(np.tile([0, 1], 50), np.arange(100))
    assert abs(independent - 1.0) < 0.05
    clustered = np.repeat([0, 1, 0, 1, 1], 20)  # whole clusters agree
    assert design_effect(clustered, np.repeat(np.arange(5), 20)) > 10
    lo, hi = share_interval(clustered, np.repeat(np.arange(5), 20))
    wide = hi - lo
    assert wide > (lambda b: b[1] - b[0])(wilson(clustered.sum(), len(clustered)))  # wider than ignoring clusters


def test_all_or_none_share_takes_the_worst_case_design_effect():
    """At 100% (or 0%) the data carry no estimate of the clustering: the interval is the one of one trial per
    text (effective n = number of texts), never the narrower one of treating every token as independent."""
    texts = np.repeat(np.arange(10), 10)  # 10 texts x 10 tokens
    assert design_effect(np.ones(100), texts) == 10.0
    lo, _ = share_interval(np.ones(100), texts)
    assert abs(lo - wilson(10, 10)[0]) < 1e-5 and lo < wilson(100, 100)[0] - 10
    lo99, _ = share_interval(np.ones(100), texts, level=0.99)
    assert lo99 < lo  # a higher level, a wider interval
