"""Intervals for the norm statistics: the cluster bootstrap (texts are the clusters, tokens of one text are not
independent), Table 1's percentile CIs, and paired model-minus-twin differences on the same tokens.
"""

from __future__ import annotations

import numpy as np

from helpers.stats.monotone import step_ok


def cluster_bootstrap(
    per_token: dict[str, np.ndarray], groups: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Percentile CIs (in %) of the token means of each array in ``per_token``, resampling whole groups (texts):
    tokens of one text are not independent. The same draws serve every array."""
    uniq, inverse = np.unique(np.asarray(groups), return_inverse=True)
    g_n = np.bincount(inverse, minlength=len(uniq)).astype(np.float64)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(d, minlength=len(uniq)) for d in rng.integers(0, len(uniq), (n_boot, len(uniq)))])
    tot = counts @ g_n
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for name, values in per_token.items():
        boot = 100 * (counts @ np.bincount(inverse, weights=values, minlength=len(uniq))) / tot
        out[name] = (float(np.percentile(boot, lo)), float(np.percentile(boot, hi)))
    return out


def bootstrap_ci(
    traj: np.ndarray,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs for sequence_pct and pair_pct (cluster bootstrap over ``groups``, e.g. the text id
    of each token; every token its own group when None)."""
    ok = step_ok(traj)
    groups = np.arange(len(ok)) if groups is None else groups
    return cluster_bootstrap({"sequence_pct": ok.all(axis=1).astype(np.float64), "pair_pct": ok.mean(axis=1)},
                             groups, n_boot, level, seed)


def paired_difference_ci(
    traj_a: np.ndarray,
    traj_b: np.ndarray,
    groups: np.ndarray,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float, float]]:
    """Difference a - b (percentage points) of sequence_pct and pair_pct for two models on the *same* tokens
    (row i of ``traj_a`` and ``traj_b`` is one token), with a paired cluster-bootstrap CI: the same resampled
    texts (``groups``) for both, so the uncertainty of both models enters. Values: (difference, low, high)."""
    ok_a, ok_b = step_ok(traj_a), step_ok(traj_b)
    if ok_a.shape[0] != ok_b.shape[0]:
        raise ValueError(f"paired trajectories must cover the same tokens: {ok_a.shape[0]} vs {ok_b.shape[0]} rows")
    diffs = {"sequence_pct": ok_a.all(axis=1).astype(np.float64) - ok_b.all(axis=1),
             "pair_pct": ok_a.mean(axis=1) - ok_b.mean(axis=1)}
    ci = cluster_bootstrap(diffs, groups, n_boot, level, seed)
    return {k: (float(100 * d.mean()), *ci[k]) for k, d in diffs.items()}
