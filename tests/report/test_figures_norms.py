"""Table 1's figures (notebook 03) carry their null and the paper: the twin's per-step shares on each dataset's bar,
the paper's pair-level range, the twin's median norms, and a log axis that says so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.experiments.paper import PAPER_TABLE1
from helpers.report.figures_norms import TRANSITION_FLOOR, fig_norm_quantiles, fig_transitions
from helpers.runs.datasets import DatasetRun, corpora_caption


def _trans(pct: float) -> pd.DataFrame:
    return pd.DataFrame([{"dataset": ds, "step": f"{i}->{i + 1}", "non_decreasing_pct": pct}
                         for ds in ("wikitext-103", "1bw") for i in range(3)])


def test_transitions_show_twin_and_paper_band():
    """The share that decreases, on a log axis: the twin's marks and the paper's band sit near 0, where the log
    axis spreads them out (on a non-decreasing axis they sat on the 100% bar tops, unseen)."""
    paper = PAPER_TABLE1[PAPER_TABLE1.dataset.isin(["wikitext-103", "1bw"])]
    fig = fig_transitions(_trans(90.0), "t", "m | d", twin=_trans(99.0), paper=paper)
    twins = [t for t in fig.data if "untrained twin" in (t.name or "")]
    assert len(twins) == 2 and {t.offsetgroup for t in twins} == {"wikitext-103", "1bw"}  # on its dataset's bar
    assert [t.showlegend for t in twins] == [True, False]  # one legend entry for both
    assert np.allclose(twins[0].y, 1.0) and np.allclose([t for t in fig.data if t.type == "bar"][0].y, 10.0)
    band = fig.layout.shapes[0]
    assert (band.y0, band.y1) == pytest.approx((100 - paper.pair_pct.max(), 100 - paper.pair_pct.min()))
    assert fig.layout.yaxis.type == "log" and "decreases" in fig.layout.yaxis.title.text
    lo, hi = fig.layout.yaxis.range
    assert 10 ** lo <= band.y0 and 10 ** hi >= 100


def test_transitions_draw_zero_at_the_floor_and_keep_the_value_in_the_hover():
    fig = fig_transitions(_trans(100.0), "t", "m | d", twin=_trans(100.0))
    bars = [t for t in fig.data if t.type == "bar"]
    assert np.allclose(bars[0].y, TRANSITION_FLOOR) and np.allclose(bars[0].customdata, 0.0)


def test_norm_quantiles_draw_twin_medians_on_a_marked_log_axis():
    rng = np.random.default_rng(0)
    norms = {"1bw": rng.lognormal(size=(50, 4)).cumsum(1)}
    twin = {"1bw": rng.lognormal(size=(50, 4))}
    fig = fig_norm_quantiles(norms, "t", "m | d", twin=twin)
    dashed = [t for t in fig.data if t.line.dash == "dash"]
    assert len(dashed) == 1 and np.allclose(dashed[0].y, np.median(twin["1bw"], 0))
    assert fig.layout.yaxis.type == "log" and "log axis" in fig.layout.yaxis.title.text


def test_corpora_caption_names_every_dataset_once_with_the_profile():
    runs = {ds: DatasetRun({"text_id": np.zeros(n)}, ds, 3, 4, 4, "model; note", "", profile="paper")
            for ds, n in (("wikitext-103", 1200), ("1bw", 800))}
    cap = corpora_caption(runs, "positions >= 5")
    assert cap == ("model; note | wikitext-103: 3 texts, 1,200 tokens + 1bw: 3 texts, 800 tokens | positions >= 5 "
                   "| profile paper")


def test_norm_quantiles_draw_every_corpus_band_under_every_median():
    """Two corpora whose medians nearly coincide (the paper profile's 1BW covered WikiText): each has its own
    translucent 10-90% band drawn before any median line, and the medians differ in marker."""
    rng = np.random.default_rng(1)
    norms = {ds: rng.lognormal(size=(200, 5)).cumsum(1) for ds in ("wikitext-103", "1bw")}
    fig = fig_norm_quantiles(norms, "t", "m | d")
    names = [t.name for t in fig.data]
    bands = [i for i, t in enumerate(fig.data) if t.fill == "tonexty"]
    medians = [i for i, n in enumerate(names) if n and n.endswith(": median")]
    assert len(bands) == 2 and len(medians) == 2 and max(bands) < min(medians)
    assert fig.data[medians[0]].marker.symbol != fig.data[medians[1]].marker.symbol
    lo = fig.data[bands[0]].y
    assert np.allclose(lo, np.percentile(norms["wikitext-103"], 10, 0)) and "rgba(" in fig.data[bands[0]].fillcolor


def test_norm_steps_show_block_0_on_the_log_axis():
    """Block 0's ratio (from the embeddings, 18.5 for SmolLM2) was clipped off the lower panel."""
    from helpers.report.figures import fig_norm_steps

    norms = pd.DataFrame([{"model": "M", "weights": w, "layer": k, "attn_decrease_pct": 10.0, "ffn_decrease_pct": 5.0,
                           "block_decrease_pct": 1.0, "ratio_median": r} for w in ("trained", "untrained twin")
                          for k, r in enumerate([18.5, 1.4, 1.1, 1.02])])
    fig = fig_norm_steps(norms, "M", "m | d", 1.045)
    lo, hi = fig.layout.yaxis2.range
    assert 10 ** lo <= 1.02 and 10 ** hi >= 18.5
