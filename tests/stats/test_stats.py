"""Norm statistics against known answers, PCA shapes and layer order, Markdown tables for readers."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.stats.intervals import bootstrap_ci
from helpers.stats.monotone import monotone_stats, step_ok, tolerance_sweep, transition_rates
from helpers.stats.pca import fit_trajectories


def test_norm_stats_known_answers():
    traj = np.array([[1, 2, 3, 4], [1, 3, 2, 4], [4, 3, 2, 1], [1, 1, 1, 1]], dtype=float)
    s = monotone_stats(traj)
    assert s["sequence_pct"] == 50.0 and s["pair_pct"] == pytest.approx(100 * 8 / 12)
    assert s["chance_pct"] == 12.5 and s["steps"] == 3 and s["n"] == 4
    np.testing.assert_allclose(transition_rates(traj), [75, 50, 75])
    ci = bootstrap_ci(traj, n_boot=200)
    assert ci["sequence_pct"][0] <= 50 <= ci["sequence_pct"][1]
    assert ci["method"] == "Wilson"  # 4 clusters: the bootstrap is not trusted


def test_intervals_never_collapse_to_a_point():
    """Every step non-decreasing on 40 texts: the bootstrap gives [100, 100]; the table must not."""
    from helpers.stats.intervals import paired_difference_ci

    traj = np.tile([[1.0, 2.0, 3.0]], (80, 1))
    groups = np.repeat(np.arange(40), 2)
    ci = bootstrap_ci(traj, groups, n_boot=200)
    for name in ("sequence_pct", "pair_pct"):
        lo, hi = ci[name]
        assert 90.0 < lo < hi and hi == pytest.approx(100.0)
    assert ci["method"] == "Wilson"
    d, lo, hi = paired_difference_ci(traj, traj, groups, n_boot=200)["sequence_pct"]
    assert d == 0.0 and lo < 0.0 < hi
    rng = np.random.default_rng(0)  # a non-degenerate case keeps the bootstrap
    noisy = np.cumsum(rng.normal(0.2, 1.0, (400, 6)), axis=1)
    assert bootstrap_ci(noisy, np.repeat(np.arange(100), 4), n_boot=200)["method"] == "bootstrap"


def test_pca_shapes_and_layer_order():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(1, 1, 16))
    steps = np.arange(7)[None, :, None] * rng.normal(size=(1, 1, 16))
    vec = base + steps + 0.01 * rng.normal(size=(5, 7, 16))
    pca = fit_trajectories(vec)
    assert pca.coords.shape == (5, 7, 3) and pca.explained_variance_ratio[0] > 0.9
    assert np.all(np.abs(np.diff(pca.coords[:, :, 0], axis=1)) > 0)  # layers stay in order along PC1
    np.testing.assert_allclose(np.abs(np.diff(pca.coords[0, :, 0])), np.abs(np.diff(pca.coords[1, :, 0])), atol=0.2)


def test_pca_leaves_the_last_layer_out_unless_asked():
    """Fig. 3/5 (Sec. 5.3) fit and draw layers 0..L-1: the last block's output must not move the fit."""
    from helpers.stats.pca import fit_layers

    rng = np.random.default_rng(0)
    vec = rng.standard_normal((12, 5, 8))  # L = 4 layers: states 0..4
    base = fit_layers(vec, n_layers=4)
    assert base.coords.shape == (12, 4, 3)
    moved = vec.copy()
    moved[:, 4] *= 1000.0  # a huge last-block output (as in many real models)
    np.testing.assert_allclose(fit_layers(moved, n_layers=4).coords, base.coords)
    assert fit_layers(vec, n_layers=4, include_last=True).coords.shape == (12, 5, 3)
    with pytest.raises(ValueError):
        fit_layers(vec[:, :4], n_layers=4)


def test_markdown_tables_show_integers_and_no_nan():
    import pandas as pd

    from helpers.report.output import markdown_table

    md = markdown_table(pd.DataFrame({"n_tokens": [34680.0, np.nan], "pct": [5.13245, 91.3], "model": ["ours", None]}))
    assert "34,680" in md and "5.132" in md and "nan" not in md and "None" not in md and "e+04" not in md


def test_tolerance_counts_small_falls_as_non_decreasing():
    traj = np.array([[1.0, 0.995, 1.2], [1.0, 0.97, 1.1], [1.0, 0.9, 1.0]])
    strict, one, five = (monotone_stats(traj, t) for t in (0.0, 0.01, 0.05))
    assert strict["sequence_pct"] == 0.0
    assert one["sequence_pct"] == pytest.approx(100 / 3)  # the 0.5% fall passes at 1%
    assert five["sequence_pct"] == pytest.approx(200 / 3)  # the 3% fall passes at 5%, the 10% one never
    assert strict["pair_pct"] <= one["pair_pct"] <= five["pair_pct"]
    sweep = tolerance_sweep(traj)
    assert [row["tolerance_pct"] for row in sweep] == [0.0, 1.0, 5.0]
    np.testing.assert_array_equal(step_ok(traj), np.diff(traj, axis=1) >= 0)  # tolerance 0 is the paper's rule


def test_interval_text_never_prints_a_point():
    from helpers.stats.intervals import ci_text

    assert ci_text(1.23, 4.56) == "[1.2, 4.6]"
    assert ci_text(99.983, 100.0) == "[99.98, 100.00]"
    assert ci_text(0.04, 0.041, sign=True) == "[+0.040, +0.041]"
    assert ci_text(5.0, 5.0) == "[5.0, 5.0]"  # a true point stays one
