"""Notebook 07, part 2: the tables, figures and reading of the powered descent test and the line search, from a
:class:`helpers.experiments.descent_powered.PoweredRun`. Every sentence of the reading is rendered from the
tables; both sides are reported (descends, ascends, not distinguishable)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from helpers.experiments.descent_powered import PoweredRun
from helpers.experiments.descent_powered_tables import (
    gradient_agreement,
    line_search,
    line_search_by_third,
    powered_by_layer,
    powered_by_third,
)
from helpers.report.figures_descent import fig_line_search, fig_powered
from helpers.report.output import save_figure, save_table
from helpers.stats.intervals import ci_text

RULE = ("Rule: a (model, third, sublayer) 'descends' when its share of descent directions is above 50% with a "
        "Holm-adjusted two-sided p < 0.05 (cluster-robust over texts; family: model x third x sublayer per "
        "gradient and weights), 'ascends' when below, else 'not distinguishable'. 50% is what a direction unrelated "
        "to the gradient gives; the untrained twin on the same tokens is the second null.")
LINE_RULE = ("Rule: a layer's update is a 'descent step' when removing it (alpha = 0) raises the loss, the 95% "
             "interval of loss(0) - loss(1) above 0, and no other alpha has loss(alpha) - loss(1) with an interval "
             "wholly below 0. Reading (b) favours alpha = 1 by construction (the later layers were trained on the "
             "unscaled update), so (a) is the sharper test of the paper's claim.")


def _sfx(profile: str) -> str:
    return "" if profile == "default" else f"_{profile}"


def tables(run: PoweredRun, n_boot: int = 1000) -> dict[str, pd.DataFrame]:
    """Every table of part 2 from the run's records."""
    line = line_search(run.records)
    return {"thirds": powered_by_third(run.records, n_boot), "by_layer": powered_by_layer(run.records),
            "agreement": gradient_agreement(run.records), "line": line, "line_thirds": line_search_by_third(line)}


def report_powered(run: PoweredRun, profile: str, figures_dir: str, results_dir: str, n_boot: int = 1000
                   ) -> tuple[list[go.Figure], dict[str, pd.DataFrame]]:
    """Save ``07_powered_thirds``, ``07_powered_by_layer``, ``07_gradient_agreement``, ``07_line_search``,
    ``07_line_search_thirds`` and two figures per model (``07_powered_<model>``, ``07_line_search_<model>``)."""
    sfx, caption = _sfx(profile), " | ".join(run.captions.values())
    t = tables(run, n_boot)
    names = {"thirds": ("07_powered_thirds", f"Powered descent test by layer third. {RULE}"),
             "by_layer": ("07_powered_by_layer", "Descent share per layer, 95% cluster-bootstrap intervals."),
             "agreement": ("07_gradient_agreement", "cos(g_inner, g_true) at each block's input."),
             "line": ("07_line_search", f"Line search per layer: loss(alpha) - loss(1), nats. {LINE_RULE}"),
             "line_thirds": ("07_line_search_thirds", f"Line search by layer third. {LINE_RULE}")}
    for key, (name, text) in names.items():
        save_table(t[key].round(4), f"{name}{sfx}", results_dir, caption=f"{text} {caption}")
    figs = []
    for model, cap in run.captions.items():
        for fig, name in ((fig_powered(t["by_layer"], model, cap), "07_powered"),
                          (fig_line_search(t["line"], model, cap), "07_line_search")):
            save_figure(fig, f"{name}_{run.tags[model]}{sfx}", figures_dir, png=profile != "smoke")
            figs.append(fig)
    return figs, t


def _third_text(d: pd.DataFrame) -> str:
    return "; ".join(f"{r.third} ({r.layers}) {r.descent_pct:.1f}% {ci_text(r.ci_lo, r.ci_hi)} **{r.verdict}**"
                     + (f", twin {r.minus_twin_pp:+.1f} pp {ci_text(r.minus_twin_lo, r.minus_twin_hi, sign=True)}"
                        if pd.notna(r.minus_twin_pp) else "") for r in d.itertuples())


def reading(t: dict[str, pd.DataFrame]) -> str:
    """The reading of part 2, rendered from its tables."""
    th, lt, ag = t["thirds"], t["line_thirds"], t["agreement"]
    lines = [RULE, ""]
    for model, d in th[th.weights == "trained"].groupby("model", sort=False):
        lines.append(f"**{model}**")
        for kind, label in (("true", "true loss"), ("inner", "Eq. 14 inner loss")):
            for step in ("block", "attn", "ffn"):
                part = d[(d.gradient == kind) & (d.step == step)]
                if not part.empty:
                    lines.append(f"- {label}, {step}: {_third_text(part)}")
        ctl = d[(d.step == "block") & d.gradient.isin(["true_rand", "true_argmax"])]
        if not ctl.empty:
            by = ctl.groupby("gradient")["descent_pct"].mean()
            lines.append(f"- controls (true-loss gradient, block, mean over thirds): random wrong target "
                         f"{by.get('true_rand', float('nan')):.1f}%, the model's own prediction "
                         f"{by.get('true_argmax', float('nan')):.1f}% (true target "
                         f"{d[(d.gradient == 'true') & (d.step == 'block')].descent_pct.mean():.1f}%)")
        a = ag[(ag.model == model) & (ag.weights == "trained") & (ag.third != "predictor")]
        if not a.empty:
            lines.append(f"- cos(g_inner, g_true) below the predictor layer: median over layers "
                         f"{a.cos_median.median():.2f} (range {a.cos_median.min():.2f} to {a.cos_median.max():.2f})")
        ls = lt[(lt.model == model) & (lt.weights == "trained") & (lt.third != "predictor")]
        for r in ls.itertuples():
            if r.step == "block":
                lines.append(f"- line search ({r.reading}) {r.third}: {r.descent_step_layers}/{r.layers} layers a "
                             f"descent step, {r.not_descent_layers} not; median removal effect "
                             f"{r.removal_median:+.3f} nats; most common best alpha {r.best_alpha_mode:g}")
        lines.append("")
    return "\n".join(lines)
