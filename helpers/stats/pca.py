"""PCA of current-token trajectories across layers (Fig. 3/5).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class TrajectoryPCA:
    """Coordinates [n_samples, n_layers, k] of every sample at every layer, in layer order."""

    coords: np.ndarray
    components: np.ndarray
    mean: np.ndarray
    explained_variance_ratio: np.ndarray


def fit_trajectories(vectors: np.ndarray, k: int = 3) -> TrajectoryPCA:
    """Fit one PCA on all (sample, layer) vectors [n, S, D] and project each trajectory onto ``k`` PCs.

    Computed in float64 by SVD of the centred data; component signs are fixed so that the largest
    loading of each component is positive (deterministic output).
    """
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 3 or vectors.shape[0] * vectors.shape[1] < 2:
        raise ValueError(f"vectors must be [n_samples, n_layers, dim] with several points, got {vectors.shape}")
    n, s, d = vectors.shape
    flat = vectors.reshape(n * s, d)
    mean = flat.mean(0)
    _, sing, vt = np.linalg.svd(flat - mean, full_matrices=False)
    k = min(k, vt.shape[0])
    comps = vt[:k]
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(1)])
    comps = comps * signs[:, None]
    var = sing**2
    return TrajectoryPCA(
        coords=((flat - mean) @ comps.T).reshape(n, s, k),
        components=comps,
        mean=mean,
        explained_variance_ratio=var[:k] / var.sum(),
    )


def fit_layers(last_vectors: np.ndarray, n_layers: int, include_last: bool = False, k: int = 3) -> TrajectoryPCA:
    """PCA of trajectories [n, L+1, D] over layers 0..L-1, as in the paper's Sec. 5.3 (the last block's
    output, layer L, left out: it is not part of the inner optimisation the paper draws); ``include_last``
    fits and draws layers 0..L instead."""
    vectors = np.asarray(last_vectors)
    if vectors.ndim != 3 or vectors.shape[1] != n_layers + 1:
        raise ValueError(f"expected [n, {n_layers + 1}, dim] vectors (layers 0..L), got {vectors.shape}")
    return fit_trajectories(vectors if include_last else vectors[:, :n_layers], k)
