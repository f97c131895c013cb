"""Notebook 04: the reading of the PCA of current-token trajectories (Fig. 3/5), rendered from the numbers."""

from __future__ import annotations

import numpy as np


def reading_pca(explained: dict[str, np.ndarray], norm_growth: dict[str, float], n_layers: int) -> str:
    """The reading of notebook 04: explained variance of PC1-3 and the share of samples whose norm grows
    from layer 0 to layer L-1, per dataset."""
    lines = [f"- **{ds}**: PC1-3 explain " + ", ".join(f"{100 * v:.1f}%" for v in explained[ds])
             + f" of the variance; the norm at layer {n_layers - 1} exceeds the norm at layer 0 for "
             f"{100 * norm_growth[ds]:.0f}% of the samples." for ds in explained]
    return (f"**Reading.** Layers 0..{n_layers - 1} (the last block's output is left out, as in the paper's "
            "Sec. 5.3). Hover over a point for its layer.\n" + "\n".join(lines))
