"""Training figures: epochs are whole numbers on every axis and colour bar that shows them."""

from __future__ import annotations

import pandas as pd

from helpers.report.figures_training import fig_losses, fig_norm_stats


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
