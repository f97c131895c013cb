"""Training figures: epochs are whole numbers on every axis and colour bar that shows them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from helpers.report.figures_training import (
    SPECTRUM_FLOOR,
    fig_eigen_spectra,
    fig_losses,
    fig_norm_stats,
    fig_surrogate_ratio,
)


def _norms(epochs: int) -> pd.DataFrame:
    e = list(range(epochs + 1))
    return pd.DataFrame({"epoch": e, "sequence_pct": [90.0] * len(e), "pair_pct": [95.0] * len(e),
                         "chance_pct": [12.5] * len(e)})


def test_norm_figure_ticks_whole_epochs():
    assert fig_norm_stats(_norms(3)).layout.xaxis.dtick == 1  # 3 epochs: no 0.5 ticks
    assert fig_norm_stats(_norms(40)).layout.xaxis.dtick == 4  # long runs: about ten ticks


def test_loss_figure_ticks_whole_epochs():
    epochs, layers = range(4), range(3)
    inner = pd.DataFrame([{"subset": "all", "epoch": e, "layer": lay, "mean": 3.0 - lay - e / 10,
                           "model_loss": 1.0} for e in epochs for lay in layers])
    outer = pd.DataFrame([{"split": s, "epoch": e, "loss": 2.0 - e / 10} for s in ("train", "val") for e in epochs])
    fig = fig_losses(outer, inner)
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tickformat == "d"
    bars = [t.marker.colorbar for t in fig.data if t.marker is not None and t.marker.showscale]
    assert len(bars) == 1 and bars[0].dtick == 1


def test_loss_figure_shows_the_last_layer_over_the_outer_loss_and_names_the_stars():
    """The last layer's inner loss is the model's own loss by construction and sits on the outer loss: it is drawn
    after the outer lines (on top) with open markers, named as such, and the right panel's stars have a legend
    entry."""
    epochs, layers = range(4), range(3)
    inner = pd.DataFrame([{"subset": "all", "epoch": e, "layer": lay, "mean": 3.0 - lay - e / 10,
                           "model_loss": 1.0 - e / 10} for e in epochs for lay in layers])
    outer = pd.DataFrame([{"split": s, "epoch": e, "loss": 1.0 - e / 10} for s in ("train", "val") for e in epochs])
    names = [t.name for t in fig_losses(outer, inner).data]
    last = names.index("inner, layer 2 = model's own loss")
    assert last > names.index("outer (train, all positions)") and last > names.index("outer (val, all positions)")
    assert "model's own loss, same tokens" not in names  # no second line for the same numbers
    stars = [t for t in fig_losses(outer, inner).data if t.showlegend is not False and t.marker.symbol == "star-open"]
    assert len(stars) == 1 and "star" in stars[0].name


def test_spectra_are_on_log_axes_with_rounding_at_a_floor_and_blocks_on_a_colour_bar():
    """A spectrum of W^T W spanning 1e25 with float rounding below zero drew on a linear axis (every curve a spike
    at rank 0) and listed 30 blocks in a legend that stopped at 15: now log axes, the rounding at a stated floor
    (hover keeps the computed value), the blocks as one colour bar."""
    rows = []
    for layer in range(30):
        values = np.concatenate([np.logspace(25 - layer, 0, 50), [1e-30, 0.0, -1e-20]])
        rows += [{"construction": c, "layer": layer, "sample": 0, "rank": k, "eigenvalue": v}
                 for c in ("frozen", "jacobian") for k, v in enumerate(values)]
    fig = fig_eigen_spectra(pd.DataFrame(rows), ["linear", "frozen", "jacobian"], "wikitext-103", "m | d")
    assert fig.layout.yaxis.type == "log" and fig.layout.yaxis2.type == "log"
    lines = [t for t in fig.data if t.mode == "lines"]
    assert len(lines) == 60 and not any(t.showlegend for t in lines)
    for t in lines:  # each block at its own floor: a large block's rounding does not hide a small block
        layer = int(t.name.split()[-1])
        assert min(t.y) == pytest.approx(10.0 ** (25 - layer) * SPECTRUM_FLOOR) and min(t.customdata) == -1e-20
    bars = [t for t in fig.data if t.marker is not None and t.marker.showscale]
    assert len(bars) == 1 and bars[0].marker.colorbar.title.text == "block"


def test_surrogate_ratio_facets_are_named_plainly_and_ticks_are_powers():
    records = pd.DataFrame([{"real_ratio": 1.0 + i / 10, "ratio": 10.0 ** i, "model": "m", "dataset": "wikitext-103",
                             "construction": c, "layer": i, "sample": 0} for c in ("linear", "frozen") for i in range(8)])
    fig = fig_surrogate_ratio(records, "m | d")
    titles = {a.text for a in fig.layout.annotations}
    assert {"linear", "frozen"} <= titles and not any("construction=" in t for t in titles)
    assert fig.layout.yaxis.exponentformat == "power" and fig.layout.xaxis.exponentformat == "power"
