"""Two-sided tests for the descent shares and line-search differences of notebook 07.

A descent share is the share of (token, layer) updates ``dz`` with ``<dz, g> < 0``; directions unrelated to ``g``
give exactly 50% (a random direction is as likely to point either way). Tokens of one text are not independent,
so every interval resamples texts (:func:`helpers.stats.intervals.cluster_bootstrap`) and every p-value uses the
cluster-robust standard error of a ratio mean. Holm's step-down correction keeps the family-wise error of a whole
table of verdicts at 5%.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from helpers.stats.intervals import cluster_bootstrap, degenerate
from helpers.stats.nulls import share_interval

LEVEL = 0.05  # family-wise error rate of a table of verdicts (Holm)


def cluster_z_pvalue(values: np.ndarray, groups: np.ndarray, null: float) -> float:
    """Two-sided p-value of ``mean(values) = null`` with the cluster-robust (texts) standard error of the mean.
    A sample without spread (every value equal) gives 0 when its mean differs from ``null``, else 1."""
    values, groups = np.asarray(values, dtype=np.float64), np.asarray(groups)
    n = len(values)
    mean = float(values.mean())
    uniq, inverse = np.unique(groups, return_inverse=True)
    g = len(uniq)
    resid = np.bincount(inverse, weights=values - mean, minlength=g)
    var = g / max(g - 1, 1) * float((resid**2).sum()) / n**2
    if var <= 0:
        return 0.0 if abs(mean - null) > 1e-12 else 1.0
    return float(2 * norm.sf(abs(mean - null) / np.sqrt(var)))


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN entries stay NaN and do not count)."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = ~np.isnan(p)
    idx = np.flatnonzero(ok)
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def share_test(indicator: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """Share (%) of true ``indicator`` values with a 95% cluster-bootstrap interval (a design-effect Wilson
    interval where the bootstrap degenerates) and the two-sided cluster-robust p-value against 50%."""
    x = np.asarray(indicator, dtype=np.float64)
    share = 100 * float(x.mean())
    ci = cluster_bootstrap({"s": x}, groups, n_boot, seed=seed)["s"]
    if degenerate(share, ci, len(np.unique(groups))):
        ci = share_interval(x.astype(bool), groups)
    return {"share": share, "lo": ci[0], "hi": ci[1], "p": cluster_z_pvalue(x, groups, 0.5)}


def mean_test(values: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = 0) -> dict:
    """Mean of ``values`` with a 95% cluster-bootstrap interval and the two-sided p-value against 0 (paired
    differences: model minus twin, loss at one scale minus another)."""
    x = np.asarray(values, dtype=np.float64)
    lo, hi = cluster_bootstrap({"m": x}, groups, n_boot, seed=seed)["m"]
    return {"mean": float(x.mean()), "lo": lo / 100, "hi": hi / 100, "p": cluster_z_pvalue(x, groups, 0.0)}


def verdict(share: float, p_adjusted: float, level: float = LEVEL) -> str:
    """'descends' / 'ascends' (share above / below 50% at the Holm-adjusted level) or 'not distinguishable'."""
    if np.isnan(p_adjusted) or p_adjusted >= level:
        return "not distinguishable"
    return "descends" if share > 50 else "ascends"
