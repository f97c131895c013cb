"""Figures of the powered descent test and the line search (notebook 07, part 2)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from helpers.report.figures import STEP_COLORS
from helpers.report.output import with_caption

TWIN_COLOR = "#7f7f7f"


def _band(fig: go.Figure, x, lo, hi, color: str, row: int, col: int) -> None:
    fig.add_scatter(x=list(x) + list(x)[::-1], y=list(hi) + list(lo)[::-1], fill="toself", line={"width": 0},
                    fillcolor=color, opacity=0.18, showlegend=False, hoverinfo="skip", row=row, col=col)


def fig_powered(by_layer: pd.DataFrame, model: str, caption: str) -> go.Figure:
    """% of tokens whose update is a descent direction per layer, with 95% intervals (texts resampled): left the
    paper's Eq. 14 inner-loss gradient, right the model's own loss through the rest of the network; trained
    block and half-steps solid, the untrained twin's block dashed grey; 50% = unrelated to the gradient."""
    d = by_layer[by_layer.model == model]
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                        subplot_titles=("Eq. 14 inner loss (last block + head)", "true loss (rest of the network)"))
    for c, kind in enumerate(("inner", "true"), start=1):
        for (weights, step), g in d[d.gradient == kind].groupby(["weights", "step"], sort=False):
            if weights != "trained" and step != "block":
                continue
            color = STEP_COLORS[step] if weights == "trained" else TWIN_COLOR
            _band(fig, g.layer, g.ci_lo, g.ci_hi, color, 1, c)
            fig.add_scatter(x=g.layer, y=g.descent_pct, mode="lines+markers", name=f"{step} ({weights})",
                            legendgroup=f"{step}{weights}", showlegend=c == 1,
                            line={"color": color, "dash": "solid" if weights == "trained" else "dash"}, row=1, col=c)
        fig.add_hline(y=50, line={"color": "black", "width": 1}, row=1, col=c)
        fig.update_xaxes(title_text="layer l", tickformat="d", row=1, col=c)
    fig.update_yaxes(title_text="% descent directions (<dz, g> < 0)", range=[0, 100], row=1, col=1)
    fig.update_layout(height=520, width=1100, legend={"orientation": "h", "y": -0.18})
    return with_caption(fig, f"Is each update a descent step? Two gradients, model vs untrained twin: {model}", caption)


def fig_line_search(table: pd.DataFrame, model: str, caption: str) -> go.Figure:
    """Loss change from removing each update (loss at alpha = 0 minus alpha = 1) per layer with 95% intervals: left
    read by the Eq. 14 predictor, right by the rest of the real network (block, attn, ffn each); the twin's block
    dashed grey. Above 0: the update lowers the loss."""
    d = table[table.model == model]
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.08,
                        subplot_titles=("(a) Eq. 14 predictor on z + alpha dz", "(b) rest of the network, context cached"))
    for c, way in enumerate(("a", "b"), start=1):
        for (weights, step), g in d[d.reading == way].groupby(["weights", "step"], sort=False):
            if weights != "trained" and step != "block":
                continue
            color = STEP_COLORS[step] if weights == "trained" else TWIN_COLOR
            _band(fig, g.layer, g.removal_lo, g.removal_hi, color, 1, c)
            fig.add_scatter(x=g.layer, y=g.removal, mode="lines+markers", name=f"{step} ({weights})",
                            legendgroup=f"{step}{weights}", showlegend=c == 1, line={"color": color, "dash": "solid" if weights == "trained" else "dash"},
                            row=1, col=c)
        fig.add_hline(y=0, line={"color": "black", "width": 1}, row=1, col=c)
        fig.update_xaxes(title_text="layer l", tickformat="d", row=1, col=c)
        fig.update_yaxes(title_text="loss(alpha=0) - loss(alpha=1), nats" if c == 1 else None, row=1, col=c)
    fig.update_layout(height=520, width=1100, legend={"orientation": "h", "y": -0.18})
    return with_caption(fig, f"Line search: what removing each update costs in loss: {model}", caption)
