"""Notebook 04: PCA of current-token trajectories across layers (Fig. 3/5) and their norms, per dataset, with the
reading rendered from the numbers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from helpers.report.figures import trajectory_figure
from helpers.report.figures_norms import fig_norm_lines
from helpers.report.output import save_figure, with_caption
from helpers.runs.datasets import DatasetRun
from helpers.stats.pca import TrajectoryPCA, fit_layers


@dataclass
class PcaRun:
    """Per dataset: the PCA of the last token's states over layers, their norms, and the run they come from."""

    pca: dict[str, TrajectoryPCA]
    norms: dict[str, np.ndarray]
    runs: dict[str, DatasetRun]
    n_layers: int
    n_samples: dict[str, int]


def run(runs: dict[str, DatasetRun], n_layers: int, n_samples: int, include_last: bool = False) -> PcaRun:
    """Fit the PCA of the first ``n_samples`` texts' last-token trajectories (layers 0..L-1, or 0..L with
    ``include_last``) for every dataset run, and their norms over the same layers."""
    pca, norms, counts = {}, {}, {}
    for ds, r in runs.items():
        vec = r.records["last_vectors"][:n_samples]
        pca[ds] = fit_layers(vec, n_layers, include_last)
        norms[ds] = np.linalg.norm(vec[:, : pca[ds].coords.shape[1]], axis=-1)
        counts[ds] = len(vec)
    return PcaRun(pca, norms, runs, n_layers, counts)


def _caption(r: PcaRun, ds: str) -> str:
    shown = r.pca[ds].coords.shape[1]
    return r.runs[ds].caption(f"last token of {r.n_samples[ds]} texts; layers 0..{shown - 1}")


def report_trajectories(r: PcaRun, ds: str, figures_dir: str, tag: str) -> tuple[go.Figure, pd.DataFrame]:
    """The 3-D trajectories of ``ds`` (saved as ``04_pca_{tag}_{ds}``) and the explained variance of PC1-3."""
    p = r.pca[ds]
    fig = trajectory_figure(p.coords, p.explained_variance_ratio)
    with_caption(fig, f"Current-token trajectories across layers (PCA), {ds}", _caption(r, ds))
    save_figure(fig, f"04_pca_{tag}_{ds}", figures_dir)
    table = pd.DataFrame({"component": [f"PC{i + 1}" for i in range(len(p.explained_variance_ratio))],
                          "explained_pct": 100 * np.asarray(p.explained_variance_ratio)})
    return fig, table


def report_norms(r: PcaRun, ds: str, figures_dir: str, tag: str) -> tuple[go.Figure, pd.DataFrame]:
    """The norm of the same samples against layer (saved as ``04_pca_norms_{tag}_{ds}``) and its quartiles."""
    fig = fig_norm_lines(r.norms[ds], f"Norm against layer for the same samples, {ds}", _caption(r, ds))
    save_figure(fig, f"04_pca_norms_{tag}_{ds}", figures_dir)
    q = np.quantile(r.norms[ds], [0.25, 0.5, 0.75], axis=0)
    return fig, pd.DataFrame({"layer": range(q.shape[1]), "q25": q[0], "median": q[1], "q75": q[2]})


def norm_growth(r: PcaRun) -> dict[str, float]:
    """Per dataset, the share of samples whose norm at layer L-1 exceeds the norm at layer 0."""
    return {ds: float(np.mean(n[:, r.n_layers - 1] > n[:, 0])) for ds, n in r.norms.items()}


def reading(r: PcaRun) -> str:
    """Explained variance of PC1-3 and the share of samples whose norm grows from layer 0 to L-1, per dataset."""
    growth = norm_growth(r)
    n = r.n_layers
    lines = [f"- **{ds}**: PC1-3 explain " + ", ".join(f"{100 * v:.1f}%" for v in p.explained_variance_ratio)
             + f" of the variance; the norm at layer {n - 1} exceeds the norm at layer 0 for "
             f"{100 * growth[ds]:.0f}% of the samples." for ds, p in r.pca.items()]
    return (f"**Reading.** Layers 0..{n - 1} (the last block's output is left out, as in the paper's "
            "Sec. 5.3). Hover over a point for its layer.\n" + "\n".join(lines))
