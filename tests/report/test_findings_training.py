"""Claim 4's text from the training tables (helpers.report.findings_training)."""

from __future__ import annotations

import pandas as pd

from helpers.report.findings_training import dynamics_section


def _losses(layer0_last: float) -> pd.DataFrame:
    cols = ["epoch", "outer, train", "outer, val", "model's own loss (inner tokens)"] + [
        f"inner, layer {i}" for i in range(4)]
    return pd.DataFrame([[0, 2.5, 2.5, 2.5, 2.52, 2.52, 2.51, 2.5],
                         [10, 1.2, 1.2, 1.18, layer0_last, 1.8, 1.6, 1.18]], columns=cols)


def test_claim4_says_when_the_fall_comes_from_a_first_layer_made_worse():
    """The inner loss falls 3 of 3 steps either way; when training raised layer 0's value above a uniform guess,
    the text says so, and it stays silent when layer 0 improved."""
    worse = " ".join(dynamics_section(_losses(3.55), None, vocab_size=12))
    assert "3 of 3 steps down" in worse and "training raised layer 0's inner loss (2.520 -> 3.550)" in worse
    assert "above a uniform guess over the 12 symbols (ln 12 = 2.485)" in worse
    better = " ".join(dynamics_section(_losses(2.0), None, vocab_size=12))
    assert "3 of 3 steps down" in better and "raised" not in better
