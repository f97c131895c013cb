"""The figures of notebooks 00 (Eq. 1 dual form), 05 (eigenvalue check) and 06 (training dynamics). Each takes
tables and returns a plotly figure.
"""

from __future__ import annotations

import pandas as pd

from helpers.corpus.synthetic import LABEL_KINDS
from helpers.report.figures import dataset_color
from helpers.report.output import with_caption


def _epoch_colors(n: int) -> list[str]:
    from plotly.colors import sample_colorscale

    return sample_colorscale("Viridis", [i / max(1, n - 1) for i in range(n)])


def _epoch_dtick(epochs) -> int:
    """Whole-epoch tick spacing: every epoch up to ten, then about ten ticks."""
    span = max(epochs) - min(epochs) if len(epochs) else 0
    return max(1, round(span / 10))


def fig_eq1_dual_form(primal, dual, contributions, title: str, caption: str):
    """Notebook 00: primal ``W_T x`` against the dual form (left, with y = x) and the contribution
    ``|score_t| * ||value_t||`` of every training step to one new input (right)."""
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("primal W_T x vs dual form", "contribution of each past step"))
    fig.add_trace(go.Scatter(x=np.ravel(primal), y=np.ravel(dual), mode="markers", name="outputs"), row=1, col=1)
    lim = [float(np.min(primal)), float(np.max(primal))]
    fig.add_trace(go.Scatter(x=lim, y=lim, mode="lines", line={"dash": "dash", "color": "grey"}, name="y = x"),
                  row=1, col=1)
    fig.add_trace(go.Bar(x=np.arange(len(contributions)), y=contributions, name="|score_t| * ||value_t||"),
                  row=1, col=2)
    fig.update_xaxes(title_text="W_T x (primal)", row=1, col=1)
    fig.update_yaxes(title_text="W_0 x + sum_t value_t score_t (dual)", row=1, col=1)
    fig.update_xaxes(title_text="training step t", row=1, col=2)
    return with_caption(fig, title, caption)


def fig_losses(outer: pd.DataFrame, inner: pd.DataFrame, floors: dict[str, float] | None = None, subset: str = "all"):
    """v2 Fig. 2: left, inner loss per layer and outer losses over epochs; right, inner loss across
    layers, one line per epoch. The model's own loss on exactly the inner-loss tokens (``model_loss``
    column of ``inner``) is a black line (left) and a star per epoch (right). Log y-axes; ``floors``
    (e.g. oracle, bigram) as dashed lines."""
    from plotly.subplots import make_subplots

    inn = inner[inner["subset"] == subset]
    layers = sorted(inn["layer"].unique())
    fig = make_subplots(rows=1, cols=2, subplot_titles=("losses over training", "inner loss across layers"))
    # the outer losses and floors first, so that the inner-loss lines are drawn over them
    for split, dash in (("train", "solid"), ("val", "dot")):
        d = outer[outer["split"] == split]
        fig.add_scatter(x=d["epoch"], y=d["loss"], mode="lines", name=f"outer ({split}, all positions)",
                        line={"color": "crimson", "dash": dash, "width": 3}, legendgroup="layers", row=1, col=1)
    span = [outer["epoch"].min(), outer["epoch"].max()]
    for (name, value), dash in zip((floors or {}).items(), ("dash", "dot", "dashdot"), strict=False):
        fig.add_scatter(x=span, y=[value, value], mode="lines", name=f"{name} ({value:.3f})",
                        line={"color": "grey", "dash": dash}, legendgroup="layers", row=1, col=1)
    own = inn.groupby("epoch")["model_loss"].first() if "model_loss" in inn else None
    layer_colors = ["#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#a65628", "#f781bf", "#17becf", "#999999"]  # no red: outer
    for c, layer in zip(layer_colors * (len(layers) // len(layer_colors) + 1), layers, strict=False):
        d = inn[inn["layer"] == layer]
        last = layer == max(layers) and own is not None
        # the last layer's inner loss is the model's own loss on these tokens by construction: one entry, drawn
        # on top with open markers, so it is neither hidden under the outer loss nor doubled by a second line
        fig.add_scatter(x=d["epoch"], y=d["mean"], mode="lines+markers", legendgroup="layers",
                        name=f"inner, layer {layer}" + (" = model's own loss" if last else ""),
                        line={"color": c, "width": 3 if last else 2},
                        marker={"symbol": "circle-open" if last else "circle", "size": 10 if last else 6},
                        legendgrouptitle_text="left: by layer", row=1, col=1)
    epochs = sorted(inn["epoch"].unique())
    for c, ep in zip(_epoch_colors(len(epochs)), epochs, strict=True):
        d = inn[inn["epoch"] == ep]
        fig.add_scatter(x=d["layer"], y=d["mean"], mode="lines+markers", name=f"epoch {ep}", line={"color": c},
                        showlegend=False, hovertemplate=f"epoch {ep}<br>layer %{{x}}: %{{y:.3f}}<extra></extra>",
                        row=1, col=2)
        if own is not None:
            fig.add_scatter(x=[max(layers)], y=[own[ep]], mode="markers", marker={"symbol": "star-open", "size": 13,
                            "color": c}, name=f"epoch {ep}: model's own loss", legendgroup="epochs",
                            showlegend=False, row=1, col=2)
    if own is not None:  # one legend entry for the stars of the right panel
        fig.add_scatter(x=[None], y=[None], mode="markers", marker={"symbol": "star-open", "size": 13, "color": "black"},
                        name="right: model's own loss (stars)", legendgroup="epochs", row=1, col=2)
    # the epochs of the right panel as a colour bar (Viridis), not as legend entries: the layers keep the legend
    fig.add_scatter(x=[None], y=[None], mode="markers", showlegend=False, row=1, col=2,
                    marker={"color": [min(epochs), max(epochs)], "colorscale": "Viridis", "showscale": True,
                            "colorbar": {"title": {"text": "epoch (right)"}, "x": 1.02, "len": 0.6, "y": 0.3,
                                         "dtick": _epoch_dtick(epochs), "tickformat": "d"}})
    fig.update_yaxes(type="log", title_text="cross-entropy (nats, log axis)")
    fig.update_xaxes(title_text="epoch", row=1, col=1, dtick=_epoch_dtick(epochs), tickformat="d")
    fig.update_xaxes(title_text="layer l (states fed to the last block)", row=1, col=2, dtick=1)
    fig.update_layout(legend={"y": 1.0, "yanchor": "top", "x": 1.02})
    return fig


def fig_clustering(clustering: pd.DataFrame, metric: str = "f1"):
    """v2 Fig. 1: clustering score of validation states per layer over epochs, one panel per label."""
    from plotly.subplots import make_subplots


    kinds = [k for k in LABEL_KINDS if k in set(clustering["label"])]
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[f"label: {k}" for k in kinds], shared_yaxes=True)
    layers = sorted(clustering["layer"].unique())
    colors = _epoch_colors(len(layers))
    for j, kind in enumerate(kinds, start=1):
        d = clustering[clustering["label"] == kind]
        for c, layer in zip(colors, layers, strict=True):
            dl = d[d["layer"] == layer]
            fig.add_scatter(x=dl["epoch"], y=dl[metric], mode="lines+markers", name=f"layer {layer}",
                            legendgroup=str(layer), showlegend=j == 1, line={"color": c}, row=1, col=j)
        if metric == "f1" and "f1_chance" in d:
            chance = d.groupby("epoch")["f1_chance"].mean()
            fig.add_scatter(x=chance.index, y=chance.values, mode="lines", name="chance (shuffled clusters)",
                            legendgroup="chance", showlegend=j == 1, line={"color": "grey", "dash": "dash"},
                            row=1, col=j)
        fig.update_xaxes(title_text="epoch", row=1, col=j, dtick=_epoch_dtick(clustering["epoch"]), tickformat="d")
    fig.update_yaxes(title_text=f"pairwise {metric.upper()}", row=1, col=1)
    return fig


def fig_attention(attention: pd.DataFrame, epoch: int, k: int = 10):
    """v2 Fig. 3 at ``epoch``: per block, share of the top-k / bottom-k attended historical positions
    that carry the query's label (per head, averaged over heads and queries), beside the chance level
    and the recency control (the k nearest positions); one panel per label."""
    from plotly.subplots import make_subplots


    d = attention[attention["epoch"] == epoch]
    kinds = [x for x in LABEL_KINDS if x in set(d["label"])]
    fig = make_subplots(rows=1, cols=len(kinds), subplot_titles=[f"label: {x}" for x in kinds], shared_yaxes=True)
    styles = (("top", f"top-{k} attended", "#1f77b4"), ("bottom", f"last-{k} attended (least)", "#ff7f0e"),
              ("chance", "chance (base rate)", "#7f7f7f"), ("recent", f"{k} nearest positions", "#bcbd22"))
    for j, kind in enumerate(kinds, start=1):
        dk = d[d["label"] == kind]
        for col, name, color in styles:
            fig.add_bar(x=[f"block {v}" for v in dk["layer"]], y=dk[col], name=name, marker_color=color,
                        legendgroup=col, showlegend=j == 1, row=1, col=j)
    fig.update_layout(barmode="group")
    fig.update_yaxes(title_text="share with the query's label", range=[0, 1], row=1, col=1)
    return fig


def fig_norm_stats(norms: pd.DataFrame, tokens: str | None = None, name: str = ""):
    """Table 1 statistics over training: sequence- and pair-level % non-decreasing vs epoch, with chance."""
    import plotly.graph_objects as go

    d = norms if tokens is None else norms[norms["tokens"] == tokens]
    fig = go.Figure()
    prefix = f"{name}: " if name else ""
    fig.add_scatter(x=d["epoch"], y=d["sequence_pct"], mode="lines+markers", name=f"{prefix}sequence level")
    fig.add_scatter(x=d["epoch"], y=d["pair_pct"], mode="lines+markers", name=f"{prefix}pair level")
    fig.add_scatter(x=d["epoch"], y=d["chance_pct"], mode="lines", name=f"{prefix}chance, sequence level (2^-steps)",
                    line={"dash": "dash", "color": "grey"})
    fig.add_scatter(x=d["epoch"], y=[50.0] * len(d), mode="lines", name=f"{prefix}chance, pair level (50%)",
                    line={"dash": "dot", "color": "grey"})
    fig.update_layout(xaxis_title="epoch", yaxis_title="% non-decreasing (layers 0..L-1)", yaxis_range=[0, 100])
    fig.update_xaxes(dtick=_epoch_dtick(d["epoch"]), tickformat="d")
    return fig


def fig_eigen_per_layer(records: pd.DataFrame, model: str, caption: str):
    """Share of samples whose surrogate meets Proposition 1, per block, one line per construction and
    dataset, beside the share whose real block grows the norm (dotted), and the paper's 100%, for the
    model labelled ``model``. Pass only the constructions that are analogues of Table 2."""
    import plotly.graph_objects as go

    first = records[records.model == model]
    fig = go.Figure()
    symbols = ("circle", "square", "diamond", "triangle-up")
    for i, ((name, ds), g) in enumerate(first.groupby(["construction", "dataset"])):
        pct = g.groupby("layer")["meets"].mean() * 100
        fig.add_trace(go.Scatter(x=pct.index, y=pct.values, mode="lines+markers", name=f"{name} surrogate meets ({ds})",
                                 line={"color": dataset_color(ds)}, marker={"symbol": symbols[i % len(symbols)]}))
    for ds, g in first.groupby("dataset"):
        pct = g.groupby("layer")["real_grows"].mean() * 100
        fig.add_trace(go.Scatter(x=pct.index, y=pct.values, mode="lines", line=dict(dash="dot", color=dataset_color(ds)),
                                 name=f"real block grows the norm ({ds})"))
    fig.add_hline(y=100, line=dict(color="grey", dash="dash"), annotation_text="paper (GPT-2): 100%")
    fig.update_layout(xaxis_title="block l", yaxis_title="% of samples", yaxis_range=[-5, 105])
    return with_caption(fig, f"Proposition 1 per layer vs the real block: {model}", caption)


def fig_surrogate_ratio(records: pd.DataFrame, caption: str):
    """Surrogate ``||W z_l|| / ||z_l||`` against the real block's ratio, log-log, one panel per construction."""
    import plotly.express as px

    fig = px.scatter(records, x="real_ratio", y="ratio", color="model", symbol="dataset", facet_col="construction",
                     log_x=True, log_y=True, hover_data=["layer", "sample"], facet_col_spacing=0.06,
                     labels={"real_ratio": "real ratio (log axis)", "ratio": "surrogate ratio (log axis)"})
    fig.add_hline(y=1, line=dict(color="grey", dash="dash"))
    fig.add_vline(x=1, line=dict(color="grey", dash="dash"))
    fig.for_each_yaxis(lambda ax: ax.update(showticklabels=True, exponentformat="power"))
    fig.for_each_xaxis(lambda ax: ax.update(exponentformat="power"))
    fig.for_each_annotation(lambda a: a.update(text=a.text.split("=", 1)[-1]) if a.text.startswith("construction=")
                            else None)  # facet titles: 'frozen', not 'construction=frozen'
    with_caption(fig, "Surrogate ||W z_l||/||z_l|| (y) against the real ||z_(l+1)||/||z_l|| (x); agreement = same "
                 "side of 1", caption)
    fig.update_layout(margin={"t": 150}, legend=dict(orientation="h", y=-0.25))
    return fig


SPECTRUM_FLOOR = 1e-15  # relative to a spectrum's largest eigenvalue: below it float64 rounding decides the value


def fig_eigen_spectra(spectra: pd.DataFrame, constructions: list[str], dataset: str, caption: str):
    """Eigenvalues of ``W^T W`` against rank for the first sample on log axes, one panel per construction (in the
    order of ``constructions``), one line per block coloured by depth (a colour bar, not 30 legend entries); red:
    eigenvalue 1. ``W^T W`` is positive semi-definite, so an eigenvalue below ``SPECTRUM_FLOOR`` times its block's
    largest (float rounding, sometimes negative) is drawn at that floor, and its hover gives the computed value."""
    import plotly.express as px
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = [c for c in constructions if c in set(spectra.construction)]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names)
    layers = sorted(spectra.layer.unique())
    colors = px.colors.sample_colorscale("Viridis", [i / max(1, len(layers) - 1) for i in range(len(layers))])
    for j, name in enumerate(names, start=1):
        first = spectra[(spectra.construction == name) & (spectra["sample"] == 0)]
        for layer, color in zip(layers, colors, strict=False):
            g = first[first.layer == layer]
            floor = float(g.eigenvalue.abs().max()) * SPECTRUM_FLOOR if len(g) else 0.0
            fig.add_trace(go.Scatter(x=g["rank"], y=g.eigenvalue.clip(lower=floor), customdata=g.eigenvalue,
                                     mode="lines", line=dict(color=color, width=1), name=f"block {layer}",
                                     showlegend=False,
                                     hovertemplate=f"block {layer}<br>rank %{{x}}: %{{customdata:.4g}}<extra></extra>"),
                          row=1, col=j)
        fig.add_hline(y=1, line=dict(color="red", dash="dash"), row=1, col=j)
        fig.update_yaxes(type="log", exponentformat="power", row=1, col=j)
        fig.layout.annotations[j - 1].text = f"{name} (log axis)"
    fig.add_scatter(x=[None], y=[None], mode="markers", showlegend=False, row=1, col=1,
                    marker={"color": [min(layers), max(layers)], "colorscale": "Viridis", "showscale": True,
                            "colorbar": {"title": {"text": "block"}, "x": 1.02, "tickformat": "d"}})
    fig.update_yaxes(title_text=f"eigenvalue of W^T W (log; below {SPECTRUM_FLOOR:.0e} x the block's largest: "
                                "rounding, drawn there)", title_font={"size": 11}, row=1, col=1)
    fig.update_xaxes(title_text="rank (0 = largest)")
    return with_caption(fig, f"Eigenvalue spectra of W^T W, first sample, {dataset}", caption)
