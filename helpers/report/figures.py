"""The figures of the corpus analyses: inner loss (02), Table 1 norms and transitions (03), trajectories (04),
descent (07), cross-model and checkpoints (08). Each takes tables and returns a plotly figure.
"""

from __future__ import annotations

import pandas as pd

from helpers.report.output import with_caption
from helpers.stats.tokens import ALL_TOKENS, PAPER_FILTER


def trajectory_figure(coords, explained=None):
    """Interactive 3-D figure: one thin line per sample through its layers in order, points coloured by layer
    (colour bar; a larger point marks layer 0), sample and layer on hover; the camera keeps the whole cloud in view."""
    import plotly.graph_objects as go

    fig = go.Figure()
    n_layers = coords.shape[1]
    for i, traj in enumerate(coords):
        fig.add_trace(go.Scatter3d(
            x=traj[:, 0], y=traj[:, 1], z=traj[:, 2], mode="lines+markers", showlegend=False,
            line={"color": "rgba(90,90,90,0.55)", "width": 2.5},
            marker={"size": [6] + [3] * (n_layers - 1), "color": list(range(n_layers)), "colorscale": "Viridis",
                    "cmin": 0, "cmax": n_layers - 1, "showscale": i == 0,
                    "colorbar": {"title": {"text": "layer"}, "len": 0.7}},
            customdata=list(range(n_layers)), hovertemplate=f"sample {i}<br>layer %{{customdata}}<extra></extra>"))
    labels = [f"PC{j + 1}" + (f" ({100 * explained[j]:.1f}%)" if explained is not None else "") for j in range(3)]
    fig.update_layout(scene={"xaxis_title": labels[0], "yaxis_title": labels[1], "zaxis_title": labels[2],
                             "domain": {"x": [0, 0.92], "y": [0, 1]}, "aspectmode": "cube",
                             "camera": {"eye": {"x": 1.55, "y": 1.55, "z": 0.75}, "center": {"x": 0, "y": 0, "z": -0.12}}},
                      height=680, margin={"l": 0, "r": 0, "b": 0})
    return fig


def fig_inner_loss(curves: pd.DataFrame, dataset: str, title: str, caption: str, vocab_size: int | None = None,
                   unigram: float | None = None, twin: pd.DataFrame | None = None, twin_sample: str = ""):
    """Fig. 2/4: inner loss (last-block lens) and logit lens per layer, mean and median with a 10-90% band, for the
    paper's filter (final loss <= 1) and for every token, log y-axis; with ``vocab_size``, ln|V| (a uniform guess)
    as a reference line (a lens above it does worse than guessing), with ``unigram`` the sample's unigram entropy
    (a guess that knows only token frequencies); with ``twin`` (the untrained twin's curves, same columns, read on
    ``twin_sample``) its median inner loss over every token in the right panel (no twin token passes the filter)."""
    import math

    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    left = "final loss <= 1 (paper's filter)"
    paper = curves[(curves.dataset == dataset) & (curves["filter"] == PAPER_FILTER)]
    if "share_passing" in paper and len(paper) and paper.share_passing.iloc[0] > 0:
        part = float(paper.share_kept.iloc[0] / paper.share_passing.iloc[0])
        left += "" if part > 0.995 else f"<br>lens on a seeded {100 * part:.0f}% of them"  # the profile's subsample
    fig = make_subplots(rows=1, cols=2, subplot_titles=(left, "all tokens (sampled)"))
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
            if "median" in t:
                fig.add_trace(go.Scatter(x=t.layer, y=t["median"], mode="lines", name=f"{name}, median",
                                         line={"color": color, "dash": "dot"}, showlegend=col == 1), row=1, col=col)
    t = twin[(twin.dataset == dataset) & (twin["filter"] == ALL_TOKENS) & (twin.lens == "inner_loss")] \
        if twin is not None else []
    if len(t):
        fig.add_trace(go.Scatter(x=t.layer, y=t["median"], mode="lines", line={"color": "black", "width": 2.5},
                                 name=f"untrained twin, inner loss median ({int(t.n_tokens.iloc[0]):,} tokens, "
                                      f"{twin_sample})"), row=1, col=2)
    shown = curves[curves.dataset == dataset]
    span = [float(shown.layer.min()), float(shown.layer.max())] if len(shown) else []
    refs = ([(math.log(vocab_size), f"ln|V| = {math.log(vocab_size):.1f} nats (a uniform guess)", "dash")]
            if vocab_size else []) + ([(unigram, f"unigram entropy of the sample = {unigram:.1f} nats", "dashdot")]
                                      if unigram else [])
    for value, label, dash in refs if span else []:
        for col in (1, 2):
            fig.add_trace(go.Scatter(x=span, y=[value, value], mode="lines", line={"color": "grey", "dash": dash},
                                     name=label, showlegend=col == 1), row=1, col=col)
    lo = shown["q10"] if "q10" in shown else shown["mean"]
    hi = shown["q90"] if "q90" in shown else shown["mean"]
    if len(shown) and lo.notna().any():  # the band's lower end can reach 1e-6 nats: keep the axis on the curves
        fig.update_yaxes(range=[math.log10(max(1e-3, float(lo.min()))), math.log10(2 * float(hi.max()))])
    fig.update_yaxes(type="log")
    fig.update_yaxes(title_text="cross-entropy (nats, log axis); band: 10-90% of tokens", row=1, col=1)
    fig.update_xaxes(title_text="layer l (input of block l)")
    # the legend below both panels, in the bottom margin: at the side its long entries squeezed each panel to ~180 px
    fig.update_layout(height=780, margin={"b": 170},
                      legend={"orientation": "h", "yref": "container", "y": 0.01, "yanchor": "bottom", "x": 0.01})
    return with_caption(fig, title, caption)


DATASET_COLORS = {"wikitext-103": "#1f77b4", "1bw": "#ff7f0e"}  # one colour per corpus in every figure


def dataset_color(name: str) -> str | None:
    """The corpus colour of a series named after a dataset (its name starts with it), else None (plotly's)."""
    return next((c for ds, c in DATASET_COLORS.items() if str(name).startswith(ds)), None)


STEP_COLORS = {"block": "#1f77b4", "attn": "#d62728", "ffn": "#2ca02c"}


def panel_legends(fig, titles: tuple[str, ...], n_layers: int) -> None:
    """One titled legend group per stacked panel (entries of the top panel under its title, of the bottom under
    its own), each name once, and whole-number layer ticks."""
    seen = set()
    for trace in fig.data:
        row = 0 if trace.yaxis in (None, "y") else 1
        trace.legendgroup, trace.legendgrouptitle = f"panel{row}", {"text": titles[row]}
        key = (row, trace.name)
        if trace.showlegend is not False and key in seen:
            trace.showlegend = False
        seen.add(key)
    fig.update_xaxes(tickmode="linear", tick0=0, dtick=max(1, round(n_layers / 15)), tickformat="d")
    fig.update_layout(legend={"tracegroupgap": 24, "groupclick": "toggleitem"})


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
                        line={"color": STEP_COLORS[step], "dash": dash}, row=1, col=1)
    b = d[(d.step == "block") & (d.weights == "trained")]
    fig.add_scatter(x=b.layer, y=b.random_descent_pct, mode="lines", name="block, random direction of same norm",
                    line={"color": "grey", "dash": "dot"}, row=1, col=1)
    fig.add_hline(y=50, line={"color": "black", "width": 1}, row=1, col=1)
    for weights, color in (("trained", STEP_COLORS["block"]), ("untrained twin", "#9467bd")):
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
    panel_legends(fig, ("descent directions (top)", "cosine with -g (bottom)"), int(d.layer.max()) + 1)
    return with_caption(fig, f"Is each layer's update a descent step on the inner loss? {model}", caption)


def fig_norm_steps(norms: pd.DataFrame, model: str, caption: str, published: float):
    """Top: % of tokens whose ||z|| the attention half-step, the FFN half-step and the whole block decrease, per
    block (trained: solid; untrained twin: dashed); bottom: median growth ratio ||z^(l+1)|| / ||z^l|| per block
    with the published ~1.045 per layer of GPT2-XL and 1 as references."""
    import math

    from plotly.subplots import make_subplots

    d = norms[norms.model == model]
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.13,
                        subplot_titles=("% of tokens whose norm decreases", "median ||z^(l+1)|| / ||z^l||, log axis"))
    for weights, g in d.groupby("weights", sort=False):
        dash = "solid" if weights == "trained" else "dash"
        for step, col in (("attn", "attn_decrease_pct"), ("ffn", "ffn_decrease_pct"), ("block", "block_decrease_pct")):
            if g[col].notna().any():
                fig.add_scatter(x=g.layer, y=g[col], mode="lines+markers", name=f"{step} ({weights})",
                                line={"color": STEP_COLORS[step], "dash": dash}, row=1, col=1)
        fig.add_scatter(x=g.layer, y=g.ratio_median, mode="lines+markers", name=f"growth ratio ({weights})",
                        line={"color": "black", "dash": dash}, row=2, col=1)
    span = [d.layer.min(), d.layer.max()]
    fig.add_scatter(x=span, y=[published, published], mode="lines", line={"color": "orange", "dash": "dot"},
                    name=f"GPT2-XL, published ~{published} per layer", row=2, col=1)
    fig.add_hline(y=1, line={"color": "grey", "width": 1}, row=2, col=1)
    # every block on the log axis, block 0 (from the embeddings, often far above the rest) included
    top = max(1.3, 1.15 * float(d.ratio_median.max()), published * 1.1)
    bottom = min(0.8, 0.9 * float(d.ratio_median.min()))
    fig.update_yaxes(type="log", range=[math.log10(bottom), math.log10(top)], row=2, col=1)
    fig.update_xaxes(title_text="block l", row=2, col=1)
    fig.update_layout(height=760)
    panel_legends(fig, ("norm decreases (top)", "growth ratio (bottom)"), int(d.layer.max()) + 1)
    return with_caption(fig, f"Where the norm moves: attention vs FFN half-steps, {model}", caption)


def fig_cross_model(rows: pd.DataFrame, dataset: str, title: str, caption: str):
    """Per model: the sequence level (0-100%), the pair level (zoomed to where the models are; chance is 50%) with
    the untrained twin as an open marker and the paper's rows as stars, and the verdict: model minus twin in
    percentage points with its paired 95% CI (sequence and pair level). Checkpoints of the project model are rows."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    t = rows[(rows.dataset == dataset) & (rows.role != "untrained twin")]
    t = t[~((t.role == "checkpoint") & (t.epoch == 0))]  # the project model's initialisation is its twin marker

    def short(m, g, r, e):
        if g != "natural":
            return m
        return f"project GPT-2 arch., epoch {int(e)}" + (f", {r.replace(' round trip', '')}" if "round trip" in r else "")

    names = [short(*v) for v in zip(t.model, t.group, t.role, t.epoch, strict=True)]
    paper = (t.role == "paper (Table 1)").to_numpy()
    ours = [n for n, p in zip(names, paper, strict=True) if not p]
    fig = make_subplots(
        rows=1, cols=3, shared_yaxes=True, horizontal_spacing=0.03, column_widths=[0.36, 0.32, 0.32],
        subplot_titles=("sequence level % (chance 2^-n: x)", "pair level % (chance 50%)",
                        "model minus twin, pp (95% CI)"))
    for col, stat in enumerate(("sequence", "pair"), start=1):
        v, lo, hi = t[f"{stat}_pct"], t.get(f"{stat}_lo"), t.get(f"{stat}_hi")
        err = {"type": "data", "symmetric": False, "array": (hi - v)[~paper], "arrayminus": (v - lo)[~paper]}
        fig.add_trace(go.Scatter(x=v[~paper], y=ours, mode="markers", name="model (95% CI)", showlegend=col == 1,
                                 marker={"color": "#1f77b4", "size": 9}, error_x=err), row=1, col=col)
        fig.add_trace(go.Scatter(x=t[f"twin_{stat}_pct"][~paper], y=ours, mode="markers", name="untrained twin",
                                 showlegend=col == 1, marker={"color": "#d62728", "size": 10, "symbol": "circle-open"}),
                      row=1, col=col)
        fig.add_trace(go.Scatter(x=v[paper], y=[n for n, p in zip(names, paper, strict=True) if p], mode="markers",
                                 name="paper (Table 1)", showlegend=col == 1,
                                 marker={"color": "#2ca02c", "size": 12, "symbol": "star"}), row=1, col=col)
    fig.add_trace(go.Scatter(x=t.chance_pct, y=names, mode="markers", name="chance", showlegend=False,
                             marker={"color": "grey", "size": 7, "symbol": "x"}), row=1, col=1)
    for stat, color in (("sequence", "#1f77b4"), ("pair", "#9467bd")):
        d = t[~paper]
        if f"vs_twin_{stat}_pp" not in d:
            continue
        fig.add_trace(go.Scatter(
            x=d[f"vs_twin_{stat}_pp"], y=ours, mode="markers", name=f"{stat} level: model - twin",
            marker={"color": color, "size": 8, "symbol": "diamond"},
            error_x={"type": "data", "symmetric": False, "array": d[f"vs_twin_{stat}_hi"] - d[f"vs_twin_{stat}_pp"],
                     "arrayminus": d[f"vs_twin_{stat}_pp"] - d[f"vs_twin_{stat}_lo"]}), row=1, col=3)
    fig.add_vline(x=0, line={"color": "grey", "dash": "dot"}, row=1, col=3)
    pair_vals = pd.concat([t.pair_pct, t.get("twin_pair_pct", t.pair_pct)]).dropna()
    fig.update_xaxes(range=[-2, 102], row=1, col=1)
    fig.update_xaxes(range=[max(0.0, float(pair_vals.min()) - 2), 100.5], row=1, col=2)
    fig.update_layout(height=max(420, 40 * len(names) + 220), width=1300, margin={"l": 260},
                      legend={"orientation": "h", "y": -0.12})
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
        color = dataset_color(ds) or palette[i % len(palette)]
        fig.add_trace(go.Scatter(x=ck.step, y=ck.sequence_pct, mode="lines+markers", name=f"{ds}", line={"color": color},
                                 error_y={"type": "data", "symmetric": False, "array": ck.sequence_hi - ck.sequence_pct,
                                          "arrayminus": ck.sequence_pct - ck.sequence_lo}))
        init = ck[ck.epoch == 0]
        if len(init):  # the twin's level as a dashed line across the run, named in the legend (no overlapping labels)
            y0 = float(init.sequence_pct.iloc[0])
            fig.add_trace(go.Scatter(x=[ck.step.min(), ck.step.max()], y=[y0, y0], mode="lines",
                                     name=f"{ds}, at initialisation (its untrained twin)",
                                     line={"dash": "dash", "color": color, "width": 1.5}))
        q = t[t.role.str.endswith("round trip")]
        fig.add_trace(go.Scatter(x=q.step, y=q.sequence_pct, mode="markers", name=f"{ds}, GGUF round trips (Q4_1, Q4_K_M)",
                                 text=q.role, marker={"symbol": "diamond-open", "size": 11, "color": color}))
    lows = rows[rows.group == "natural"].sequence_lo.dropna()
    fig.update_layout(xaxis_title="optimiser step", yaxis_title="sequence level % (every step non-decreasing)",
                      yaxis={"range": [max(0.0, float(lows.min()) - 3) if len(lows) else 0, 102]},
                      legend={"orientation": "h", "y": -0.18})
    return with_caption(fig, title, caption)


SCALE_PANELS = (("sequence_pct", "sequence level %"), ("pair_pct", "pair level % (per step)"),
                ("cal_tau", "inner loss: interior Kendall tau (< 0: falls)"))


PAPER_SYMBOLS = ("star", "star-square", "star-diamond")


def fig_scale(rows: pd.DataFrame, dataset: str, title: str, caption: str):
    """Each headline statistic against parameter count (log axis): every model (filled, with its 95% CI), its
    untrained twin at the same size (open), the paper's models as stars at their sizes."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    t = rows[(rows.dataset == dataset) & rows.params.notna()]
    twin_all = t[t.role == "untrained twin"]
    fig = make_subplots(rows=1, cols=len(SCALE_PANELS), subplot_titles=[name for _, name in SCALE_PANELS],
                        horizontal_spacing=0.07)
    palette = ["#1f77b4", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22"]
    models = list(dict.fromkeys(t[t.role == "trained"].model))
    for col, (stat, _) in enumerate(SCALE_PANELS, start=1):
        for i, model in enumerate(models):
            m, twin = t[(t.model == model) & (t.role == "trained")], t[(t.role == "untrained twin") & (t.group == t[t.model == model].group.iloc[0])]
            base = stat.removesuffix("_pct")
            lo, hi = m.get(f"{base}_lo"), m.get(f"{base}_hi")
            err = ({"type": "data", "symmetric": False, "array": hi - m[stat], "arrayminus": m[stat] - lo}
                   if lo is not None and hi is not None else None)
            color = palette[i % len(palette)]
            fig.add_trace(go.Scatter(x=m.params, y=m[stat], mode="markers", name=model, legendgroup=model,
                                     showlegend=col == 1, error_y=err, marker={"color": color, "size": 11}), row=1, col=col)
            fig.add_trace(go.Scatter(x=twin.params, y=twin[stat], mode="markers", name=f"{model}: untrained twin",
                                     legendgroup=model, showlegend=False,
                                     marker={"color": color, "size": 12, "symbol": "circle-open", "line": {"width": 2}}),
                          row=1, col=col)
        paper = t[t.role == "paper (Table 1)"] if stat in ("sequence_pct", "pair_pct") else t.iloc[:0]
        for j, (_, p) in enumerate(paper.iterrows()):  # one legend entry per paper model: no labels to collide
            fig.add_trace(go.Scatter(x=[p.params], y=[p[stat]], mode="markers", legendgroup=p.model,
                                     name=f"{p.model.replace(' (paper)', '')}, paper Table 1 ({p.params / 1e9:.1f}B as named)", showlegend=col == 1,
                                     marker={"color": "#2ca02c", "size": 14, "line": {"width": 1, "color": "black"},
                                             "symbol": PAPER_SYMBOLS[j % len(PAPER_SYMBOLS)]}), row=1, col=col)
        fig.update_xaxes(type="log", range=[7.8, 10.4], title_text="parameters (log scale)", row=1, col=col)
        values = pd.concat([t[stat], twin_all[stat]]).dropna() if stat in t else pd.Series(dtype=float)
        low = 0.0 if stat != "pair_pct" or values.empty else max(0.0, 5 * float((values.min() - 3) // 5))
        fig.update_yaxes(range=[-1.05, 1.05] if stat == "cal_tau" else [low - 2, 102], row=1, col=col)
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="markers", name="open marker: the model's untrained twin",
                             marker={"color": "grey", "size": 12, "symbol": "circle-open"}))
    fig.update_layout(width=1300, height=600, legend={"orientation": "h", "y": -0.22})
    return with_caption(fig, title, caption)
