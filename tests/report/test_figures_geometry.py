"""Notebook 09's figure: every marker visible where nulls and observations coincide, no empty band."""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.report.figures_geometry import NULL_MARKERS, fig_rates_vs_null


def _rates() -> pd.DataFrame:
    rows = []
    for model, role, pct in (("M", "trained", 91.0), ("M", "twin, sigma 0.02", 100.0)):
        rows.append({"model": model, "role": role, "group": "", "kind": "block", "pair_pct": pct, "pair_lo": pct - 1,
                     "pair_hi": min(pct + 1, 100.0), "null_pair_pct": 100.0, "same_pair_pct": pct,
                     "other_pair_pct": pct, "vs_null_pair_pp": pct - 100, "vs_null_pair_lo": pct - 101,
                     "vs_null_pair_hi": pct - 99, "cov_pair_pct": pct})
    return pd.DataFrame(rows)


def test_observed_dots_are_not_hidden_under_equal_nulls():
    """On a twin row every null equals the observed 100%: the nulls sit off the row's line and the observed dot is
    drawn after them (it was hidden under the null markers on every twin row)."""
    fig = fig_rates_vs_null(_rates(), "t", "m | d")
    left = [t for t in fig.data if t.xaxis == "x"]
    assert left[-1].name == "observed (95% CI)"
    observed_y = np.asarray(left[-1].y)
    for trace in left[:-1]:
        assert trace.name in {label for _, label, _, _ in NULL_MARKERS}
        assert np.all(np.abs(np.asarray(trace.y) - observed_y) >= 0.15)
    assert list(fig.layout.yaxis.ticktext) == ["M · twin, sigma 0.02", "M"]
    assert len(left) == len(NULL_MARKERS) + 1  # the covariance-matched null drawn too


def test_legend_sits_in_the_bottom_margin():
    fig = fig_rates_vs_null(_rates(), "t", "m | d")
    assert fig.layout.legend.yref == "container" and fig.layout.legend.y < 0.05 and fig.layout.margin.b <= 120
