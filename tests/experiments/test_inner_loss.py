"""Notebook 02's null: the untrained twin's inner loss, read on notebook 08's sample through the same cache, and
drawn on the figure's all-tokens panel only."""

from __future__ import annotations

import pandas as pd
from conftest import SMOKE, tiny_with_tok

from helpers.experiments import inner_loss, zoo
from helpers.experiments.cross_rows import analyse_entry
from helpers.lm.twin import untrained_twin
from helpers.report.figures import fig_inner_loss
from helpers.stats.tokens import ALL_TOKENS, PAPER_FILTER


def test_twin_curves_share_notebook_08s_cached_twin_run(tmp_path, one_thread):
    kw = dict(cache_dir=str(tmp_path / "c"), filtered_dir=str(tmp_path / "f"), progress=False)
    table, sample = inner_loss.twin_curves(tiny_with_tok("llama"), ["1bw"], SMOKE, twin_seed=0, **kw)
    assert sample == "notebook 08's smoke sample"
    # notebook 08's own twin (fresh model, same seed) finds that run in the cache: one computation serves both
    again = untrained_twin(tiny_with_tok("llama"), seed=0)
    runs = analyse_entry(zoo.Entry(again, group="g", role=zoo.TWIN), ["1bw"], SMOKE, cached_only=True, **kw)
    pd.testing.assert_frame_equal(inner_loss.inner_loss_table(runs, again.label), table)
    inner = table[(table.lens == "inner_loss") & (table["filter"] == ALL_TOKENS)]
    assert len(inner) == again.n_layers and inner["median"].notna().all()

    fig = fig_inner_loss(table, "1bw", "t", "model | data", vocab_size=128, twin=table, twin_sample=sample)
    drawn = [tr for tr in fig.data if tr.name and tr.name.startswith("untrained twin")]
    assert len(drawn) == 1 and drawn[0].xaxis == "x2"  # the all-tokens panel
    assert list(drawn[0].y) == list(inner.sort_values("layer")["median"])
    # the legend in the bottom margin, so the two panels keep the figure's width
    assert fig.layout.legend.orientation == "h" and fig.layout.legend.yref == "container"
    assert fig.layout.xaxis2.domain[1] == 1.0
    text = inner_loss._twin_text(table, "1bw", sample)
    assert f"{inner['median'].iloc[0]:.1f} ->" in text and sample in text


def test_filtered_panel_says_when_the_lens_ran_on_a_share_of_the_filtered_tokens():
    """The paper profile's lens runs on a seeded quarter of the filtered tokens: the left panel's title says so
    (a subtitle may drop that clause to fit), and says nothing when every filtered token got the lens."""
    def curves(kept: float) -> pd.DataFrame:
        return pd.DataFrame([{"dataset": "1bw", "filter": f, "lens": "inner_loss", "layer": layer, "mean": 2.0,
                              "median": 2.0, "q10": 1.0, "q90": 3.0, "share_kept": kept, "share_passing": 0.2,
                              "n_tokens": 10} for f in (PAPER_FILTER, ALL_TOKENS) for layer in range(3)])

    titles = [a.text for a in fig_inner_loss(curves(0.05), "1bw", "t", "m | d").layout.annotations]
    assert any("lens on a seeded 25% of them" in t for t in titles)
    titles = [a.text for a in fig_inner_loss(curves(0.2), "1bw", "t", "m | d").layout.annotations]
    assert not any("seeded" in t for t in titles)
