"""Figures of notebook 09: observed non-decrease beside its nulls, and the per-layer geometry of the steps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from helpers.report.output import with_caption

NULL_MARKERS = (("null_pair_pct", "direction-randomised null (closed form)", "circle-open", "#d62728"),
                ("cov_pair_pct", "covariance-matched direction null", "diamond-open", "#9467bd"),
                ("same_pair_pct", "swap null: another token's update, same text", "x", "#7f7f7f"),
                ("other_pair_pct", "swap null: another text's update", "triangle-up-open", "#2ca02c"))


def _short(model: str, role: str, group: str = "") -> str:
    name = "project GPT-2 arch. (natural text)" if group == "natural" else model.split(",")[0].split(" (")[0]
    return name + ("" if role == "trained" else f" · {role}")


NULL_OFFSETS = (0.36, 0.18, -0.18, -0.36)  # each null's row offset from the observed dot, so none hides another


def fig_rates_vs_null(rates: pd.DataFrame, title: str, caption: str) -> go.Figure:
    """Whole-block steps, one row per entry: the observed pair level (95% CI) beside the direction-randomised,
    covariance-matched (where the table has it) and swap nulls (left; the nulls sit just above and below the row's line, the observed dot on it and drawn last, so
    a null at the same value does not hide it), and observed - direction null in percentage points with its
    paired 95% CI (right)."""
    t = rates[rates.kind == "block"].iloc[::-1]
    names = [_short(m, r, g) for m, r, g in zip(t.model, t.role, t.group, strict=True)]
    y = np.arange(len(names), dtype=float)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.03, column_widths=[0.6, 0.4],
                        subplot_titles=("pair level: steps whose norm does not fall, %",
                                        "observed - direction null, pp"))
    for (col, label, symbol, color), dy in zip(NULL_MARKERS, NULL_OFFSETS, strict=True):
        if col not in t:
            continue
        fig.add_trace(go.Scatter(x=t[col], y=y + dy, mode="markers", name=label, customdata=names,
                                 hovertemplate="%{customdata}: %{x:.2f}%<extra>" + label + "</extra>",
                                 marker={"color": color, "size": 8, "symbol": symbol}), row=1, col=1)
    fig.add_trace(go.Scatter(x=t.pair_pct, y=y, mode="markers", name="observed (95% CI)", customdata=names,
                             hovertemplate="%{customdata}: %{x:.2f}%<extra>observed</extra>",
                             marker={"color": "#1f77b4", "size": 9},
                             error_x={"type": "data", "symmetric": False, "array": t.pair_hi - t.pair_pct,
                                      "arrayminus": t.pair_pct - t.pair_lo}), row=1, col=1)
    fig.add_trace(go.Scatter(x=t.vs_null_pair_pp, y=y, mode="markers", name="observed - null", showlegend=False,
                             marker={"color": "#1f77b4", "size": 8, "symbol": "diamond"}, customdata=names,
                             hovertemplate="%{customdata}: %{x:+.2f} pp<extra></extra>",
                             error_x={"type": "data", "symmetric": False, "array": t.vs_null_pair_hi - t.vs_null_pair_pp,
                                      "arrayminus": t.vs_null_pair_pp - t.vs_null_pair_lo}), row=1, col=2)
    fig.add_vline(x=0, line={"color": "black", "width": 1}, row=1, col=2)
    fig.add_vline(x=50, line={"color": "grey", "dash": "dot", "width": 1}, row=1, col=1)
    fig.update_yaxes(tickvals=y, ticktext=names, range=[-0.7, len(names) - 0.3])
    fig.update_xaxes(title_text="% of steps (chance of a coin: 50%, dotted)", row=1, col=1)
    fig.update_xaxes(title_text="percentage points", row=1, col=2)
    fig.update_layout(height=230 + 26 * len(names), width=1100, margin={"b": 110},
                      legend={"orientation": "h", "yref": "container", "y": 0.01, "yanchor": "bottom", "x": 0.01})
    return with_caption(fig, title, caption)


def fig_cos_by_layer(layers: pd.DataFrame, model: str, caption: str) -> go.Figure:
    """Per layer, for the model (solid) and its twin (dashed): the median and interquartile band of cos(z, dz) and
    the median threshold -r/2 (a step keeps the norm exactly when cos >= -r/2; below -1, off the axis, no direction
    can lower the norm), one panel per step kind."""
    kinds = [k for k in ("attn", "mlp", "block") if (layers.kind == k).any()]
    kinds = [k for k in kinds if k != "block"] or ["block"]
    titles = {"attn": "attention half-step", "mlp": "MLP half-step", "block": "whole block"}
    fig = make_subplots(rows=1, cols=len(kinds), shared_yaxes=True, horizontal_spacing=0.04,
                        subplot_titles=[titles[k] for k in kinds])
    colors = {"trained": "#1f77b4"}
    for col, kind in enumerate(kinds, start=1):
        for role, g in layers[layers.kind == kind].groupby("role", sort=False):
            color = colors.get(role, "#d62728")
            dash = "solid" if role == "trained" else "dash"
            name = "model" if role == "trained" else role
            fig.add_trace(go.Scatter(x=list(g.layer) + list(g.layer[::-1]), y=list(g.cos_q75) + list(g.cos_q25[::-1]),
                                     fill="toself", fillcolor=color, opacity=0.15, line={"width": 0},
                                     name=f"{name}: cos IQR", showlegend=col == 1, hoverinfo="skip"), row=1, col=col)
            fig.add_trace(go.Scatter(x=g.layer, y=g.cos_median, mode="lines+markers", name=f"{name}: median cos(z, dz)",
                                     line={"color": color, "dash": dash}, marker={"size": 4}, showlegend=col == 1),
                          row=1, col=col)
            fig.add_trace(go.Scatter(x=g.layer, y=g.threshold_median, mode="lines", name=f"{name}: median -r/2",
                                     line={"color": color, "dash": "dot", "width": 1}, showlegend=col == 1),
                          row=1, col=col)
        fig.add_hline(y=0, line={"color": "grey", "width": 1}, row=1, col=col)
        fig.update_xaxes(title_text="layer (block index)", dtick=max(1, int(layers.layer.max() // 6)), row=1, col=col)
    fig.update_yaxes(title_text="cos(z, dz); the norm falls below -r/2", range=[-1.05, 1.05], row=1, col=1)
    fig.update_layout(height=520, width=1100, legend={"orientation": "h", "y": -0.18, "x": 0, "yanchor": "top"})
    return with_caption(fig, f"{model}: the direction of each update against the stream", caption)
