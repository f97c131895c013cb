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


GRADIENT_TITLES = {"inner": "Eq. 14 inner loss at the step's start", "true": "true loss at the step's start",
                   "true_end": "true loss at the step's end (step size)"}


def fig_powered(by_layer: pd.DataFrame, model: str, caption: str) -> go.Figure:
    """% of tokens whose update is a descent direction per layer, with 95% intervals (texts resampled), for three
    slopes: the paper's Eq. 14 inner-loss gradient and the model's own loss through the rest of the network, both
    at the step's start (descent tests), and the latter at the step's end (about 0 at a tuned step size: a
    step-size test); trained block and half-steps solid, the untrained twin's block dashed grey; 50% = unrelated
    to the gradient."""
    d = by_layer[by_layer.model == model]
    kinds = [k for k in GRADIENT_TITLES if k in set(d.gradient)]
    fig = make_subplots(rows=1, cols=len(kinds), shared_yaxes=True, horizontal_spacing=0.05,
                        subplot_titles=[GRADIENT_TITLES[k] for k in kinds])
    for c, kind in enumerate(kinds, start=1):
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
    fig.update_layout(height=520, width=1300, legend={"orientation": "h", "y": -0.18})
    return with_caption(fig, f"Is each update a descent step? Three slopes, model vs untrained twin: {model}", caption)


def fig_line_search(table: pd.DataFrame, model: str, caption: str) -> go.Figure:
    """Top: loss change from removing each update (loss at alpha = 0 minus alpha = 1) per layer with 95%
    intervals; bottom: the loss-minimising scale alpha* (a parabola through the grid's lowest point and its
    neighbours) with its 95% interval, 1 = the model's own step. Left read by the Eq. 14 predictor, right by the
    rest of the real network (block, attn, ffn each); the twin's block dashed grey (reading (a) only)."""
    d = table[table.model == model]
    fig = make_subplots(rows=2, cols=2, horizontal_spacing=0.08, vertical_spacing=0.12, shared_xaxes=True,
                        subplot_titles=("(a) Eq. 14 predictor on z + alpha dz", "(b) rest of the network, context cached",
                                        "", ""))
    for c, way in enumerate(("a", "b"), start=1):
        for (weights, step), g in d[d.reading == way].groupby(["weights", "step"], sort=False):
            if weights != "trained" and step != "block":
                continue
            color = STEP_COLORS[step] if weights == "trained" else TWIN_COLOR
            line = {"color": color, "dash": "solid" if weights == "trained" else "dash"}
            for r, (y, lo, hi) in enumerate(((g.removal, g.removal_lo, g.removal_hi),
                                             (g.best_alpha, g.best_lo, g.best_hi)), start=1):
                _band(fig, g.layer, lo, hi, color, r, c)
                fig.add_scatter(x=g.layer, y=y, mode="lines+markers", name=f"{step} ({weights})",
                                legendgroup=f"{step}{weights}", showlegend=c == 1 and r == 1, line=line, row=r, col=c)
        fig.add_hline(y=0, line={"color": "black", "width": 1}, row=1, col=c)
        fig.add_hline(y=1, line={"color": "black", "width": 1}, row=2, col=c)
        fig.update_xaxes(title_text="layer l", tickformat="d", row=2, col=c)
        fig.update_yaxes(title_text="loss(alpha=0) - loss(alpha=1), nats" if c == 1 else None, row=1, col=c)
        fig.update_yaxes(title_text="best scale alpha* (1 = the model's step)" if c == 1 else None, row=2, col=c)
    fig.update_layout(height=820, width=1100, legend={"orientation": "h", "y": -0.1})
    return with_caption(fig, f"Line search: what removing each update costs, and the best scale: {model}", caption)


ABLATION_COLORS = {"gradient": "#d62728", "random": "#1f77b4", "orthogonal": "#2ca02c"}


def fig_ablation(table: pd.DataFrame, model: str, caption: str) -> go.Figure:
    """The causal test on the block updates: mean loss change (nats, 95% intervals over texts) per layer third
    when the update loses its component along -g (red), a random component of the same norm (blue), or everything
    but the gradient component (green); panels: the Eq. 14 gradient read by the predictor, the true loss's
    gradient read by the predictor and by the rest of the network; the untrained twin's bars paler (reading (a)
    only). A descent step loses more from red than from blue."""
    d = table[(table.model == model) & (table.step == "block")]
    panels = [("a", "inner", "(a) Eq. 14 gradient, predictor"), ("a", "true", "(a) true-loss gradient, predictor"),
              ("b", "true", "(b) true-loss gradient, rest of the network")]
    fig = make_subplots(rows=1, cols=3, horizontal_spacing=0.06, subplot_titles=[p[2] for p in panels])
    for c, (way, kind, _) in enumerate(panels, start=1):
        for weights in ("trained", "untrained twin"):
            for comp, color in ABLATION_COLORS.items():
                g = d[(d.reading == way) & (d.gradient == kind) & (d.weights == weights) & (d.component == comp)]
                if g.empty:
                    continue
                fig.add_bar(x=[f"{t} ({'twin' if weights != 'trained' else 'model'})" for t in g.third],
                            y=g.loss_change, marker={"color": color, "opacity": 1.0 if weights == "trained" else 0.4},
                            error_y={"type": "data", "symmetric": False, "array": g.ci_hi - g.loss_change,
                                     "arrayminus": g.loss_change - g.ci_lo},
                            name=f"{comp} removed", legendgroup=comp, showlegend=c == 1 and weights == "trained",
                            row=1, col=c)
        fig.add_hline(y=0, line={"color": "black", "width": 1}, row=1, col=c)
    fig.update_yaxes(title_text="loss change from the ablation, nats", row=1, col=1)
    fig.update_layout(height=560, width=1300, barmode="group", legend={"orientation": "h", "y": -0.25})
    return with_caption(fig, f"Does the gradient part of each block update do the work? {model}", caption)
