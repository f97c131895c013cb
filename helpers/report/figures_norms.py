"""Figures of Table 1 and its trajectories (notebooks 03 and 04): which layer steps break the pattern, residual norms
per layer with their spread, one line per token."""

from __future__ import annotations

import pandas as pd

from helpers.report.figures import dataset_color
from helpers.report.output import with_caption

TRANSITION_FLOOR = 0.02  # % decreasing: a share below it (0 included) is drawn at it, on the log axis


def fig_transitions(trans: pd.DataFrame, title: str, caption: str, twin: pd.DataFrame | None = None,
                    paper: pd.DataFrame | None = None):
    """Share of tokens whose norm *decreases* at each layer step (100 - the non-decreasing share), one bar group
    per dataset, on a log axis: the steps that break the pattern stand out, and so do the nulls, which sit near
    0 (a non-decreasing axis drew them on the 100% bar tops, where nobody could see them). With ``twin`` (the
    untrained twin's table, same columns) its shares as black marks on each dataset's bar; with ``paper`` (rows of
    the paper's Table 1) the range of its pair levels as a band. Shares below ``TRANSITION_FLOOR`` % (0 included)
    are drawn at the floor; the hover gives every share as computed."""
    import math

    import plotly.graph_objects as go

    def down(t: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
        pct = 100.0 - t.non_decreasing_pct
        return pct.clip(lower=TRANSITION_FLOOR), pct

    fig = go.Figure()
    for ds, t in trans.groupby("dataset", sort=False):
        y, pct = down(t)
        fig.add_trace(go.Bar(x=t.step, y=y, customdata=pct, name=ds, marker_color=dataset_color(ds), offsetgroup=ds,
                             hovertemplate=f"{ds}, step %{{x}}: %{{customdata:.2f}}% decrease<extra></extra>"))
    for i, (ds, t) in enumerate(twin.groupby("dataset", sort=False) if twin is not None else ()):
        y, pct = down(t)
        fig.add_trace(go.Scatter(x=t.step, y=y, customdata=pct, mode="markers", offsetgroup=ds, showlegend=i == 0,
                                 name="untrained twin (mark on each bar)", legendgroup="twin",
                                 hovertemplate=f"twin, {ds}, step %{{x}}: %{{customdata:.2f}}%<extra></extra>",
                                 marker={"symbol": "line-ew-open", "size": 14, "color": "black",
                                         "line": {"width": 3, "color": "black"}}))
    if paper is not None and len(paper):
        lo, hi = 100.0 - float(paper.pair_pct.max()), 100.0 - float(paper.pair_pct.min())
        fig.add_hrect(y0=max(lo, TRANSITION_FLOOR), y1=hi, fillcolor="grey", opacity=0.25, line_width=0)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", marker={"symbol": "square", "size": 12,
                                 "color": "rgba(128,128,128,0.4)"},
                                 name=f"paper: {lo:.1f}-{hi:.1f}% of steps decrease (pair level,<br>"
                                      f"{', '.join(paper.model.unique())}; {', '.join(paper.dataset.unique())})"))
    fig.update_layout(xaxis_title="layer step", barmode="group", scattermode="group",
                      yaxis={"type": "log", "range": [math.log10(TRANSITION_FLOOR), 2.0], "exponentformat": "none",
                             "title": {"text": f"% of tokens whose norm decreases (log axis; below {TRANSITION_FLOOR}%: "
                                               "at the axis floor)"}})
    return with_caption(fig, title, caption)


def _rgba(hex_color: str, alpha: float) -> str:
    h = hex_color.lstrip("#")
    return f"rgba({int(h[0:2], 16)},{int(h[2:4], 16)},{int(h[4:6], 16)},{alpha})"


def fig_norm_quantiles(norms: dict, title: str, caption: str, twin: dict | None = None):
    """Median residual norm per layer with its 10-90% band (a translucent area, so two corpora's bands stay
    readable where they overlap), one line per entry of ``norms`` {name: [N, L]} with its own marker; with
    ``twin`` (same form: the untrained twin's norms) its medians dashed. Log y-axis: the norms span decades."""
    import numpy as np
    import plotly.graph_objects as go

    fig = go.Figure()
    symbols = ("circle", "diamond", "square", "triangle-up")
    for name, traj in norms.items():  # the bands first, every median line above them
        x = list(range(traj.shape[1]))
        color = dataset_color(name) or "#555555"
        fig.add_trace(go.Scatter(x=x, y=np.percentile(traj, 90, 0), mode="lines", line={"width": 0},
                                 showlegend=False, hoverinfo="skip", legendgroup=name))
        fig.add_trace(go.Scatter(x=x, y=np.percentile(traj, 10, 0), mode="lines", line={"width": 0}, fill="tonexty",
                                 fillcolor=_rgba(color, 0.2), name=f"{name}: 10-90% of tokens", legendgroup=name))
    for i, (name, traj) in enumerate(norms.items()):
        fig.add_trace(go.Scatter(x=list(range(traj.shape[1])), y=np.median(traj, 0), mode="lines+markers",
                                 name=f"{name}: median", legendgroup=name, line={"color": dataset_color(name)},
                                 marker={"symbol": symbols[i % len(symbols)], "size": 7}))
    for name, traj in (twin or {}).items():
        fig.add_trace(go.Scatter(x=list(range(traj.shape[1])), y=np.median(traj, 0), mode="lines",
                                 name=f"{name}: untrained twin, median", line={"color": dataset_color(name), "dash": "dash"}))
    fig.update_layout(xaxis_title="layer l (input of block l)", yaxis_title="||z_l|| (median and 10-90%; log axis)",
                      yaxis_type="log")
    return with_caption(fig, title, caption)


def fig_norm_lines(norms, title: str, caption: str):
    """One thin line per sample: norm [n, S] against layer, log y-axis."""
    import plotly.graph_objects as go

    fig = go.Figure([go.Scatter(x=list(range(norms.shape[1])), y=row, mode="lines", line={"width": 1}, opacity=0.5,
                                showlegend=False) for row in norms])
    fig.update_layout(xaxis_title="layer", yaxis_title="||z_l|| (log axis)", yaxis_type="log")
    return with_caption(fig, title, caption)
