"""Notebook 07, part 2: the tables, figures and reading of the powered descent test and the line search, from a
:class:`helpers.experiments.descent_slopes.PoweredRun`. Every sentence of the reading is rendered from the
tables; both sides are reported (descends, ascends, not distinguishable)."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from helpers.experiments.descent_slopes import PoweredRun
from helpers.experiments.descent_slopes_tables import (
    ablation,
    gradient_agreement,
    line_search,
    line_search_by_third,
    powered_by_layer,
    powered_by_third,
)
from helpers.report.figures_descent import fig_ablation, fig_line_search, fig_powered
from helpers.report.findings_descent import ABLATION_RULE, LINE_RULE, RULE, powered_reading
from helpers.report.output import save_figure, save_table


def _sfx(profile: str) -> str:
    return "" if profile == "default" else f"_{profile}"


def tables(run: PoweredRun, n_boot: int = 1000) -> dict[str, pd.DataFrame]:
    """Every table of part 2 from the run's records."""
    line = line_search(run.records)
    return {"thirds": powered_by_third(run.records, n_boot), "by_layer": powered_by_layer(run.records),
            "agreement": gradient_agreement(run.records), "line": line, "line_thirds": line_search_by_third(line),
            "ablation": ablation(run.records, n_boot)}


def report_powered(run: PoweredRun, profile: str, figures_dir: str, results_dir: str, n_boot: int = 1000
                   ) -> tuple[list[go.Figure], dict[str, pd.DataFrame]]:
    """Save ``07_powered_thirds``, ``07_powered_by_layer``, ``07_gradient_agreement``, ``07_line_search``,
    ``07_line_search_thirds``, ``07_ablation`` and three figures per model (``07_powered_<model>``,
    ``07_line_search_<model>``, ``07_ablation_<model>``)."""
    sfx, caption = _sfx(profile), " | ".join(run.captions.values())
    t = tables(run, n_boot)
    names = {"thirds": ("07_powered_thirds", f"Powered descent test by layer third. {RULE}"),
             "by_layer": ("07_powered_by_layer", "Descent share per layer, 95% cluster-bootstrap intervals."),
             "agreement": ("07_gradient_agreement", "cos(g_inner, g_true) at each block's input."),
             "line": ("07_line_search", f"Line search per layer: loss(alpha) - loss(1), nats. {LINE_RULE}"),
             "line_thirds": ("07_line_search_thirds", f"Line search by layer third. {LINE_RULE}"),
             "ablation": ("07_ablation", f"Ablation of the update's gradient component by layer third. {ABLATION_RULE}")}
    for key, (name, text) in names.items():
        save_table(t[key].round(4), f"{name}{sfx}", results_dir, caption=f"{text} {caption}")
    figs = []
    for model, cap in run.captions.items():
        for fig, name in ((fig_powered(t["by_layer"], model, cap), "07_powered"),
                          (fig_line_search(t["line"], model, cap), "07_line_search"),
                          (fig_ablation(t["ablation"], model, cap), "07_ablation")):
            save_figure(fig, f"{name}_{run.tags[model]}{sfx}", figures_dir, png=profile != "smoke")
            figs.append(fig)
    return figs, t


def reading(t: dict[str, pd.DataFrame]) -> str:
    """The reading of part 2 (:func:`helpers.report.findings_descent.powered_reading`) of :func:`tables`."""
    return powered_reading(t["thirds"], t["line_thirds"], t["agreement"], t["ablation"])
