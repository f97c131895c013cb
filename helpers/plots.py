"""Plotly figures saved as interactive HTML and static PNG; tables saved as CSV and Markdown."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import pandas as pd

from helpers.store import atomic_write_text, repo_path

_PNG_HINT = (
    "static PNG export needs Chrome or Chromium for kaleido: install it (Debian/Ubuntu: "
    "`apt-get install chromium`; elsewhere: `plotly_get_chrome`) - the HTML figures were written"
)
_png_warned = False


def browser_available() -> bool:
    """Whether kaleido can find a Chrome/Chromium binary."""
    return any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome"))


def short_provenance(caption: str, width: int = 130) -> str:
    """One short line from a provenance caption ``model; note | data: counts | filter``: the first clause
    of each part, joined with ' · ', cut at ``width`` characters."""
    parts = [p.split(";")[0].strip() for p in caption.split(" | ") if p.strip()]
    line = " · ".join(parts)
    return line if len(line) <= width else line[: width - 1] + "…"


def with_caption(fig, title: str, caption: str):
    """Title line + one short provenance line on ``fig``; the full caption (model, weights, data, sample
    count, filter) is on the hover of a '[provenance: hover]' note in the HTML, and in the table captions."""
    full = caption.replace(" | ", "<br>")
    fig.update_layout(
        title={"text": f"{title}<br><sup>{short_provenance(caption)}</sup>", "x": 0.01, "y": 0.97,
               "yref": "container", "yanchor": "top"},
        margin={"t": 95},
        template="plotly_white",
        meta={"caption": caption},
    )
    fig.add_annotation(text="[provenance: hover]", hovertext=full, showarrow=False, xref="paper", yref="paper",
                       x=1.0, y=1.07, xanchor="right", yanchor="bottom", font={"size": 10, "color": "#777"})
    return fig


def save_figure(fig, name: str, figures_dir: str | Path, caption: str | None = None, png: bool = True) -> list[Path]:
    """Write ``figures_dir/name.html`` (interactive) and, with ``png``, ``name.png`` (static; skipped with one
    warning saying what to install when no browser exists). Returns the paths written."""
    global _png_warned
    out = repo_path(figures_dir)
    out.mkdir(parents=True, exist_ok=True)
    if caption and not (fig.layout.meta and "caption" in fig.layout.meta):  # not already put there by with_caption
        with_caption(fig, fig.layout.title.text or "", caption)
    html = out / f"{name}.html"
    fig.write_html(html, include_plotlyjs="cdn")
    paths = [html]
    if png and browser_available():
        png = out / f"{name}.png"
        fig.write_image(png, width=1000, height=680, scale=1)
        paths.append(png)
    elif png and not _png_warned:
        warnings.warn(_PNG_HINT, stacklevel=2)
        _png_warned = True
    return paths


def markdown_table(df: pd.DataFrame) -> str:
    """Markdown for readers: whole-number columns as integers with thousands separators, other numbers to 4
    significant digits, and empty cells (not 'nan') where a row has no value."""
    out = df.copy()
    for col in out.columns:
        values = out[col]
        if values.dtype.kind not in "fi":
            out[col] = values.where(values.notna(), "")
            continue
        finite = values.dropna()
        whole = len(finite) > 0 and bool((finite == finite.round()).all()) and finite.abs().max() < 1e15
        out[col] = [("" if pd.isna(v) else f"{int(v):,}" if whole else f"{v:.4g}") for v in values]
    return out.to_markdown(index=False, disable_numparse=True)


def save_table(df: pd.DataFrame, name: str, results_dir: str | Path, caption: str = "") -> list[Path]:
    """Write ``results_dir/name.csv`` and ``name.md`` (Markdown with the caption above the table)."""
    out = repo_path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    csv = out / f"{name}.csv"
    md = out / f"{name}.md"
    atomic_write_text(csv, df.to_csv(index=False))
    body = (f"{caption}\n\n" if caption else "") + markdown_table(df) + "\n"
    atomic_write_text(md, body)
    return [csv, md]


def trajectory_figure(coords, explained=None):
    """Interactive 3-D figure: one line per sample through its layers in order, layer index on hover."""
    import plotly.colors as pc
    import plotly.graph_objects as go

    palette = pc.qualitative.Dark24
    fig = go.Figure()
    for i, traj in enumerate(coords):
        fig.add_trace(
            go.Scatter3d(
                x=traj[:, 0], y=traj[:, 1], z=traj[:, 2], mode="lines+markers",
                line={"color": palette[i % len(palette)], "width": 3},
                marker={"size": [6] + [2] * (len(traj) - 2) + [5], "color": palette[i % len(palette)]},
                customdata=list(range(len(traj))), hovertemplate="sample " + str(i) + "<br>layer %{customdata}<extra></extra>",
                showlegend=False,
            )
        )
    labels = [f"PC{j + 1}" + (f" ({100 * explained[j]:.1f}%)" if explained is not None else "") for j in range(3)]
    fig.update_layout(scene={"xaxis_title": labels[0], "yaxis_title": labels[1], "zaxis_title": labels[2],
                             "domain": {"x": [0, 1], "y": [0, 1]}, "aspectmode": "cube"},
                      height=680, margin={"l": 0, "r": 0, "b": 0})
    return fig


# ---------------------------------------------------------------------------------------------- notebooks 02-04


def fig_inner_loss(curves: pd.DataFrame, dataset: str, title: str, caption: str):
    """Fig. 2/4: inner loss (last-block lens) and logit lens per layer, mean +- std, for the paper's filter
    (final loss <= 1) and for every token, log y-axis."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from helpers.reports import ALL_TOKENS, PAPER_FILTER

    fig = make_subplots(rows=1, cols=2, subplot_titles=("final loss <= 1 (paper's filter)", "all tokens (sampled)"))
    for col, filt in enumerate((PAPER_FILTER, ALL_TOKENS), start=1):
        for lens, color, fill in (("inner_loss", "#1f77b4", "rgba(31,119,180,0.15)"),
                                  ("logit_lens", "#ff7f0e", "rgba(255,127,14,0.15)")):
            t = curves[(curves.dataset == dataset) & (curves["filter"] == filt) & (curves.lens == lens)]
            name = "inner loss (last-block lens, Eq. 14)" if lens == "inner_loss" else "logit lens"
            if t.empty:  # e.g. the paper profile runs no logit lens
                continue
            if "q10" in t:  # a 10-90% band: mean +- std would run below zero on a log axis
                fig.add_trace(go.Scatter(x=list(t.layer) + list(t.layer)[::-1], y=list(t.q90) + list(t.q10)[::-1],
                                         fill="toself", fillcolor=fill, line={"width": 0}, hoverinfo="skip",
                                         showlegend=False), row=1, col=col)
            fig.add_trace(go.Scatter(x=t.layer, y=t["mean"], mode="lines+markers", name=f"{name}, mean",
                                     line={"color": color}, showlegend=col == 1), row=1, col=col)
    fig.update_yaxes(type="log")
    fig.update_yaxes(title_text="cross-entropy (nats); band: 10-90% of tokens", row=1, col=1)
    fig.update_xaxes(title_text="layer l (input of block l)")
    return with_caption(fig, title, caption)


def fig_transitions(trans: pd.DataFrame, title: str, caption: str):
    """Share of tokens whose norm does not decrease at each layer step, one bar group per dataset."""
    import plotly.graph_objects as go

    fig = go.Figure([go.Bar(x=t.step, y=t.non_decreasing_pct, name=ds) for ds, t in trans.groupby("dataset")])
    fig.update_layout(xaxis_title="layer step", yaxis_title="% of tokens non-decreasing", barmode="group")
    return with_caption(fig, title, caption)


def fig_norm_quantiles(norms: dict, title: str, caption: str):
    """Median residual norm per layer with a 10-90% band, one line per entry of ``norms`` {name: [N, L]}."""
    import numpy as np
    import plotly.graph_objects as go

    fig = go.Figure()
    for name, traj in norms.items():
        med, lo, hi = np.median(traj, 0), np.percentile(traj, 10, 0), np.percentile(traj, 90, 0)
        fig.add_trace(go.Scatter(x=list(range(traj.shape[1])), y=med, mode="lines+markers", name=f"{name} median",
                                 error_y={"type": "data", "symmetric": False, "array": hi - med, "arrayminus": med - lo}))
    fig.update_layout(xaxis_title="layer l (input of block l)", yaxis_title="||z_l|| (median, 10-90%)")
    return with_caption(fig, title, caption)


def fig_norm_lines(norms, title: str, caption: str):
    """One thin line per sample: norm [n, S] against layer, log y-axis."""
    import plotly.graph_objects as go

    fig = go.Figure([go.Scatter(x=list(range(norms.shape[1])), y=row, mode="lines", line={"width": 1}, opacity=0.5,
                                showlegend=False) for row in norms])
    fig.update_layout(xaxis_title="layer", yaxis_title="||z_l||", yaxis_type="log")
    return with_caption(fig, title, caption)


# ---------------------------------------------------------------------------------------------- notebooks 00 and 06
# Eq. (1) dual form (notebook 00) and the v2 training-dynamics figures (notebook 06).


def _epoch_colors(n: int) -> list[str]:
    from plotly.colors import sample_colorscale

    return sample_colorscale("Viridis", [i / max(1, n - 1) for i in range(n)])


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
    for c, layer in zip(_epoch_colors(len(layers)), layers, strict=True):
        d = inn[inn["layer"] == layer]
        fig.add_scatter(x=d["epoch"], y=d["mean"], mode="lines+markers", name=f"inner, layer {layer}",
                        line={"color": c}, legendgroup="layers", legendgrouptitle_text="left: by layer", row=1, col=1)
    own = inn.groupby("epoch")["model_loss"].first() if "model_loss" in inn else None
    if own is not None:
        fig.add_scatter(x=own.index, y=own.values, mode="lines", name="model's own loss, same tokens",
                        line={"color": "black", "dash": "dash", "width": 2}, legendgroup="layers", row=1, col=1)
    for split, dash in (("train", "solid"), ("val", "dot")):
        d = outer[outer["split"] == split]
        fig.add_scatter(x=d["epoch"], y=d["loss"], mode="lines", name=f"outer ({split}, all positions)",
                        line={"color": "crimson", "dash": dash, "width": 3}, legendgroup="layers", row=1, col=1)
    span = [outer["epoch"].min(), outer["epoch"].max()]
    for (name, value), dash in zip((floors or {}).items(), ("dash", "dot", "dashdot"), strict=False):
        fig.add_scatter(x=span, y=[value, value], mode="lines", name=f"{name} ({value:.3f})",
                        line={"color": "grey", "dash": dash}, legendgroup="layers", row=1, col=1)
    epochs = sorted(inn["epoch"].unique())
    for c, ep in zip(_epoch_colors(len(epochs)), epochs, strict=True):
        d = inn[inn["epoch"] == ep]
        fig.add_scatter(x=d["layer"], y=d["mean"], mode="lines+markers", name=f"epoch {ep}", line={"color": c},
                        legendgroup="epochs", legendgrouptitle_text="right: by epoch", row=1, col=2)
        if own is not None:
            fig.add_scatter(x=[max(layers)], y=[own[ep]], mode="markers", marker={"symbol": "star-open", "size": 13,
                            "color": c}, name=f"epoch {ep}: model's own loss", legendgroup="epochs",
                            showlegend=False, row=1, col=2)
    fig.update_yaxes(type="log", title_text="cross-entropy (nats)")
    fig.update_xaxes(title_text="epoch", row=1, col=1)
    fig.update_xaxes(title_text="layer l (states fed to the last block)", row=1, col=2, dtick=1)
    return fig


def fig_clustering(clustering: pd.DataFrame, metric: str = "f1"):
    """v2 Fig. 1: clustering score of validation states per layer over epochs, one panel per label."""
    from plotly.subplots import make_subplots

    from helpers.synthetic import LABEL_KINDS

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
        fig.update_xaxes(title_text="epoch", row=1, col=j)
    fig.update_yaxes(title_text=f"pairwise {metric.upper()}", row=1, col=1)
    return fig


def fig_attention(attention: pd.DataFrame, epoch: int, k: int = 10):
    """v2 Fig. 3 at ``epoch``: per block, share of the top-k / bottom-k attended historical positions
    that carry the query's label (per head, averaged over heads and queries), beside the chance level
    and the recency control (the k nearest positions); one panel per label."""
    from plotly.subplots import make_subplots

    from helpers.synthetic import LABEL_KINDS

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
    return fig


# ---------------------------------------------------------------------------------------------- notebook 05
# Eq. 10-12, Proposition 1: linear block surrogates against the real blocks (rows of
# helpers.surrogates.experiment.run_eigen_check; spectra from helpers.surrogates.report.spectra_frame).


def fig_eigen_per_layer(records: pd.DataFrame, model: str, caption: str):
    """Share of samples whose surrogate meets Proposition 1, per block, one line per construction and
    dataset, beside the share whose real block grows the norm (dotted), and the paper's 100%, for the
    model labelled ``model``. Pass only the constructions that are analogues of Table 2."""
    import plotly.graph_objects as go

    first = records[records.model == model]
    fig = go.Figure()
    for (name, ds), g in first.groupby(["construction", "dataset"]):
        pct = g.groupby("layer")["meets"].mean() * 100
        fig.add_trace(go.Scatter(x=pct.index, y=pct.values, mode="lines+markers", name=f"{name} meets ({ds})"))
    for ds, g in first.groupby("dataset"):
        pct = g.groupby("layer")["real_grows"].mean() * 100
        fig.add_trace(go.Scatter(x=pct.index, y=pct.values, mode="lines", line=dict(dash="dot", color="black"),
                                 name=f"real block grows ({ds})"))
    fig.add_hline(y=100, line=dict(color="grey", dash="dash"), annotation_text="paper (GPT-2): 100%")
    fig.update_layout(xaxis_title="block l", yaxis_title="% of samples", yaxis_range=[-5, 105])
    return with_caption(fig, f"Proposition 1 per layer vs the real block: {model}", caption)


def fig_surrogate_ratio(records: pd.DataFrame, caption: str):
    """Surrogate ``||W z_l|| / ||z_l||`` against the real block's ratio, log-log, one panel per construction."""
    import plotly.express as px

    fig = px.scatter(records, x="real_ratio", y="ratio", color="model", symbol="dataset", facet_col="construction",
                     log_x=True, log_y=True, hover_data=["layer", "sample"], facet_col_spacing=0.06,
                     labels={"real_ratio": "real ratio", "ratio": "surrogate ratio"})
    fig.add_hline(y=1, line=dict(color="grey", dash="dash"))
    fig.add_vline(x=1, line=dict(color="grey", dash="dash"))
    fig.for_each_yaxis(lambda ax: ax.update(showticklabels=True))
    with_caption(fig, "Surrogate ||W z_l||/||z_l|| (y) against the real ||z_(l+1)||/||z_l|| (x); agreement = same "
                 "side of 1", caption)
    fig.update_layout(margin={"t": 150}, legend=dict(orientation="h", y=-0.25))
    return fig


def fig_eigen_spectra(spectra: pd.DataFrame, constructions: list[str], dataset: str, caption: str):
    """Eigenvalues of ``W^T W`` (log) against rank for the first sample, one panel per construction (in the
    order of ``constructions``), one line per block coloured by depth; red: eigenvalue 1."""
    import plotly.express as px
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    names = [c for c in constructions if c in set(spectra.construction)]
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names)
    layers = sorted(spectra.layer.unique())
    colors = px.colors.sample_colorscale("Viridis", [i / max(1, len(layers) - 1) for i in range(len(layers))])
    for j, name in enumerate(names, start=1):
        for layer, color in zip(layers, colors, strict=False):
            g = spectra[(spectra.construction == name) & (spectra.layer == layer) & (spectra["sample"] == 0)]
            fig.add_trace(go.Scatter(x=g["rank"], y=g.eigenvalue, mode="lines", line=dict(color=color, width=1),
                                     name=f"block {layer}", legendgroup=str(layer), showlegend=(j == 1)), row=1, col=j)
        fig.add_hline(y=1, line=dict(color="red", dash="dash"), row=1, col=j)
    fig.update_yaxes(type="log", exponentformat="power")
    fig.update_yaxes(title_text="eigenvalue of W^T W (log)", row=1, col=1)
    fig.update_xaxes(title_text="rank (0 = largest)")
    return with_caption(fig, f"Eigenvalue spectra of W^T W, first sample, {dataset}", caption)


# ----------------------------------------------------------------------------------------------
# notebook 07: descent test (helpers/descent.py)

_STEP_COLORS = {"block": "#1f77b4", "attn": "#d62728", "ffn": "#2ca02c"}


def fig_descent(by_layer: pd.DataFrame, model: str, caption: str):
    """Top: % of tokens whose update is a descent direction of the inner loss (<dz, g> < 0) per layer, for the
    block and each half-step (trained: solid), the twin's block (dashed) and random directions of the same norm
    (dotted grey); bottom: median cos(dz, -g) of the block update with its interquartile band, twin and random beside."""
    from plotly.subplots import make_subplots

    d = by_layer[by_layer.model == model]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("share of descent directions, % of tokens", "cos(dz, -g), block update"))
    for (weights, step), g in d.groupby(["weights", "step"], sort=False):
        if weights != "trained" and step != "block":  # the twin's half-steps are in the tables
            continue
        dash = "solid" if weights == "trained" else "dash"
        fig.add_scatter(x=g.layer, y=g.descent_pct, mode="lines+markers", name=f"{step} ({weights})",
                        line={"color": _STEP_COLORS[step], "dash": dash}, row=1, col=1)
    b = d[(d.step == "block") & (d.weights == "trained")]
    fig.add_scatter(x=b.layer, y=b.random_descent_pct, mode="lines", name="block, random direction of same norm",
                    line={"color": "grey", "dash": "dot"}, row=1, col=1)
    fig.add_hline(y=50, line={"color": "black", "width": 1}, row=1, col=1)
    for weights, color in (("trained", _STEP_COLORS["block"]), ("untrained twin", "#9467bd")):
        g = d[(d.step == "block") & (d.weights == weights)]
        fig.add_scatter(x=list(g.layer) + list(g.layer[::-1]), y=list(g.cos_q75) + list(g.cos_q25[::-1]),
                        fill="toself", line={"width": 0}, fillcolor=color, opacity=0.2, showlegend=False, row=2, col=1)
        fig.add_scatter(x=g.layer, y=g.cos_median, mode="lines+markers", name=f"median cos, block ({weights})",
                        line={"color": color}, row=2, col=1)
    fig.add_scatter(x=b.layer, y=b.random_cos_median, mode="lines", name="median cos, random direction",
                    line={"color": "grey", "dash": "dot"}, row=2, col=1)
    fig.add_hline(y=0, line={"color": "black", "width": 1}, row=2, col=1)
    fig.update_xaxes(title_text="layer l (update of block l)", row=2, col=1)
    fig.update_layout(height=760)
    return with_caption(fig, f"Is each layer's update a descent step on the inner loss? {model}", caption)


def fig_norm_steps(norms: pd.DataFrame, model: str, caption: str, published: float = 1.045):
    """Top: % of tokens whose ||z|| the attention half-step, the FFN half-step and the whole block decrease, per
    block (trained: solid; untrained twin: dashed); bottom: median growth ratio ||z^(l+1)|| / ||z^l|| per block
    with the published ~1.045 per layer of GPT2-XL and 1 as references."""
    import math

    from plotly.subplots import make_subplots

    d = norms[norms.model == model]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("% of tokens whose norm decreases", "median ||z^(l+1)|| / ||z^l||"))
    for weights, g in d.groupby("weights", sort=False):
        dash = "solid" if weights == "trained" else "dash"
        for step, col in (("attn", "attn_decrease_pct"), ("ffn", "ffn_decrease_pct"), ("block", "block_decrease_pct")):
            if g[col].notna().any():
                fig.add_scatter(x=g.layer, y=g[col], mode="lines+markers", name=f"{step} ({weights})",
                                line={"color": _STEP_COLORS[step], "dash": dash}, row=1, col=1)
        fig.add_scatter(x=g.layer, y=g.ratio_median, mode="lines+markers", name=f"growth ratio ({weights})",
                        line={"color": "black", "dash": dash}, row=2, col=1)
    span = [d.layer.min(), d.layer.max()]
    fig.add_scatter(x=span, y=[published, published], mode="lines", line={"color": "orange", "dash": "dot"},
                    name=f"GPT2-XL, published ~{published} per layer", row=2, col=1)
    fig.add_hline(y=1, line={"color": "grey", "width": 1}, row=2, col=1)
    top = max(1.3, 1.1 * float(d[d.layer > 0].ratio_median.max()))  # block 0 (from the embeddings) may be far above
    fig.update_yaxes(type="log", range=[math.log10(0.8), math.log10(top)], row=2, col=1)
    fig.layout.annotations[1].text = "median ||z^(l+1)|| / ||z^l|| (axis clipped above block 1's range; tables: all)"
    fig.update_xaxes(title_text="block l", row=2, col=1)
    fig.update_layout(height=760)
    return with_caption(fig, f"Where the norm moves: attention vs FFN half-steps, {model}", caption)


# ---------------------------------------------------------------------------------------------- notebook 08


def fig_cross_model(rows: pd.DataFrame, dataset: str, title: str, caption: str):
    """Sequence and pair level per model (whiskers: 95% CI), the untrained twin as an open marker, the paper's rows
    as stars and chance as a cross; project-trained checkpoints appear as their own rows."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    t = rows[(rows.dataset == dataset) & (rows.role != "untrained twin")]
    t = t[~((t.role == "checkpoint") & (t.epoch == 0))]  # the project model's initialisation is its twin marker
    def short(m, g, r, e):
        if g != "natural":
            return m
        return f"project GPT-2 arch., epoch {int(e)}" + (f", {r.replace(' round trip', '')}" if "round trip" in r else "")

    names = [short(*v) for v in zip(t.model, t.group, t.role, t.epoch, strict=True)]
    fig = make_subplots(rows=1, cols=2, subplot_titles=("sequence level %", "pair level %"), shared_yaxes=True,
                        horizontal_spacing=0.04)
    for col, stat in enumerate(("sequence", "pair"), start=1):
        v, lo, hi = t[f"{stat}_pct"], t.get(f"{stat}_lo"), t.get(f"{stat}_hi")
        paper = t.role == "paper (Table 1)"
        fig.add_trace(go.Scatter(x=v[~paper], y=[n for n, p in zip(names, paper, strict=True) if not p], mode="markers",
                                 name="model", marker={"color": "#1f77b4", "size": 9}, showlegend=col == 1,
                                 error_x={"type": "data", "symmetric": False, "array": (hi - v)[~paper],
                                          "arrayminus": (v - lo)[~paper]}), row=1, col=col)
        fig.add_trace(go.Scatter(x=t[f"twin_{stat}_pct"][~paper], y=[n for n, p in zip(names, paper, strict=True) if not p],
                                 mode="markers", name="untrained twin", showlegend=col == 1,
                                 marker={"color": "#d62728", "size": 10, "symbol": "circle-open"}), row=1, col=col)
        fig.add_trace(go.Scatter(x=v[paper], y=[n for n, p in zip(names, paper, strict=True) if p], mode="markers",
                                 name="paper (Table 1)", showlegend=col == 1,
                                 marker={"color": "#2ca02c", "size": 12, "symbol": "star"}), row=1, col=col)
        chance = t.chance_pct if stat == "sequence" else pd.Series(50.0, index=t.index)  # one step: a coin flip
        fig.add_trace(go.Scatter(x=chance, y=names, mode="markers", name="chance (2^-n; pair: 50%)", showlegend=col == 1,
                                 marker={"color": "grey", "size": 7, "symbol": "x"}), row=1, col=col)
    fig.update_xaxes(range=[-2, 102])
    fig.update_layout(height=max(350, 40 * len(names) + 150), width=1100, margin={"l": 260})
    return with_caption(fig, title, caption)


def fig_checkpoints(rows: pd.DataFrame, title: str, caption: str):
    """Sequence-level rate of the project-trained model at every checkpoint (x: optimiser step) per dataset, with
    its value at initialisation (the untrained twin) as a dashed reference line and the quantised last checkpoint
    as extra markers."""
    import plotly.graph_objects as go

    fig = go.Figure()
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd")
    for i, (ds, t) in enumerate(rows[rows.group == "natural"].groupby("dataset", sort=False)):
        ck = t[t.role == "checkpoint"].sort_values("step")
        color = palette[i % len(palette)]
        fig.add_trace(go.Scatter(x=ck.step, y=ck.sequence_pct, mode="lines+markers", name=f"{ds}", line={"color": color},
                                 error_y={"type": "data", "symmetric": False, "array": ck.sequence_hi - ck.sequence_pct,
                                          "arrayminus": ck.sequence_pct - ck.sequence_lo}))
        init = ck[ck.epoch == 0]
        if len(init):
            fig.add_hline(y=float(init.sequence_pct.iloc[0]), line={"dash": "dash", "color": color},
                          annotation_text=f"untrained, {ds}",
                          annotation_position="top left" if i % 2 == 0 else "bottom left")
        q = t[t.role.str.endswith("round trip")]
        fig.add_trace(go.Scatter(x=q.step, y=q.sequence_pct, mode="markers", name=f"{ds}, GGUF round trips (Q4_1, Q4_K_M)",
                                 text=q.role, marker={"symbol": "diamond-open", "size": 11, "color": color}))
    fig.update_layout(xaxis_title="optimiser step", yaxis_title="sequence level % (every step non-decreasing)")
    return with_caption(fig, title, caption)
