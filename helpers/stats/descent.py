"""Two-sided tests for the descent shares and line-search differences of notebook 07.

A descent share is the share of (token, layer) updates ``dz`` with ``<dz, g> < 0``; directions unrelated to ``g``
give exactly 50% (a random direction is as likely to point either way). Tokens of one text are not independent,
so every interval resamples texts (:func:`helpers.stats.intervals.cluster_bootstrap`) and every p-value uses the
cluster-robust standard error of a ratio mean. A table's verdicts keep the family-wise error at 5% through
Bonferroni-adjusted intervals, so each printed interval agrees with its verdict.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import norm

from helpers.stats.intervals import cluster_bootstrap, cluster_resamples, degenerate
from helpers.stats.nulls import share_interval

LEVEL = 0.05  # family-wise error rate of a table of verdicts
MIN_EFFECT = 3.0  # pp above (below) 50% that a share must reach to read "descends" ("ascends")


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


def share_test(indicator: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = 0,
               level: float = 0.95) -> dict:
    """Share (%) of true ``indicator`` values with a cluster-bootstrap interval at ``level`` (a design-effect
    Wilson interval where the bootstrap degenerates) and the two-sided cluster-robust p-value against 50%."""
    x = np.asarray(indicator, dtype=np.float64)
    share = 100 * float(x.mean())
    ci = cluster_bootstrap({"s": x}, groups, n_boot, level=level, seed=seed)["s"]
    if degenerate(share, ci, len(np.unique(groups))):
        ci = share_interval(x.astype(bool), groups, level)
    return {"share": share, "lo": ci[0], "hi": ci[1], "p": cluster_z_pvalue(x, groups, 0.5)}


def mean_test(values: np.ndarray, groups: np.ndarray, n_boot: int = 1000, seed: int = 0,
              level: float = 0.95) -> dict:
    """Mean of ``values`` with a cluster-bootstrap interval at ``level`` and the two-sided p-value against 0
    (paired differences: model minus twin, loss at one scale minus another)."""
    x = np.asarray(values, dtype=np.float64)
    lo, hi = cluster_bootstrap({"m": x}, groups, n_boot, level=level, seed=seed)["m"]
    return {"mean": float(x.mean()), "lo": lo / 100, "hi": hi / 100, "p": cluster_z_pvalue(x, groups, 0.0)}


def descent_verdict(share: float, lo: float, hi: float, twin_lo: float = np.nan, twin_hi: float = np.nan,
                    min_effect: float = MIN_EFFECT) -> tuple[str, str]:
    """Claim 1b's rule for one share (%) with its family-adjusted interval ``[lo, hi]`` and, for a trained model,
    the adjusted interval of its paired difference from the untrained twin (pp): 'descends' when the interval
    lies above 50%, the share is at least ``min_effect`` pp above it and the twin difference's interval lies
    above 0; 'ascends' the mirror image; else 'not distinguishable'. Returns the verdict and the reason."""
    twin = not (np.isnan(twin_lo) and np.isnan(twin_hi))
    for name, sign, beyond in (("descends", 1, lo > 50), ("ascends", -1, hi < 50)):
        if not beyond:
            continue
        if sign * (share - 50) < min_effect:
            return "not distinguishable", f"within {min_effect:g} pp of 50%"
        if twin and not (twin_lo > 0 if sign > 0 else twin_hi < 0):
            return "not distinguishable", "the untrained twin as far from 50%"
        return name, ""
    return "not distinguishable", "interval includes 50%"


def parabola_minimiser(alphas: np.ndarray, curves: np.ndarray) -> np.ndarray:
    """Minimiser of each curve ``curves[..., A]`` sampled at ``alphas`` [A] (increasing): the vertex of the
    parabola through the lowest grid point and its two neighbours (the three end points where the lowest is at
    an end), clipped to the grid; the lowest grid point where that parabola is not convex."""
    x = np.asarray(alphas, dtype=np.float64)
    y = np.asarray(curves, dtype=np.float64)
    i = np.clip(np.argmin(y, axis=-1) - 1, 0, len(x) - 3)
    x0, x1, x2 = x[i], x[i + 1], x[i + 2]
    y0, y1, y2 = (np.take_along_axis(y, (i + k)[..., None], -1)[..., 0] for k in range(3))
    d01, d12 = (y1 - y0) / (x1 - x0), (y2 - y1) / (x2 - x1)
    curv = (d12 - d01) / (x2 - x0)  # the parabola's leading coefficient
    with np.errstate(divide="ignore", invalid="ignore"):
        vertex = (x0 + x1) / 2 - d01 / (2 * curv)
    lowest = x[np.argmin(y, axis=-1)]
    return np.where(curv > 0, np.clip(vertex, x[0], x[-1]), lowest)


def minimiser_interval(alphas: np.ndarray, losses: np.ndarray, groups: np.ndarray, n_boot: int = 1000,
                       level: float = 0.95, seed: int = 0) -> dict:
    """The minimiser (:func:`parabola_minimiser`) of the mean loss curve of ``losses`` [tokens, A] and its
    percentile interval over cluster-bootstrap resamples of the texts ``groups``."""
    losses = np.asarray(losses, dtype=np.float64)
    inverse, counts = cluster_resamples(groups, n_boot, seed)
    c = counts.shape[1]
    sums = np.stack([np.bincount(inverse, weights=losses[:, k], minlength=c) for k in range(losses.shape[1])], axis=1)
    sizes = np.bincount(inverse, minlength=c).astype(np.float64)
    boot = parabola_minimiser(alphas, (counts @ sums) / (counts @ sizes)[:, None])
    tail = 100 * (1 - level) / 2
    return {"alpha": float(parabola_minimiser(alphas, losses.mean(0))),
            "lo": float(np.percentile(boot, tail)), "hi": float(np.percentile(boot, 100 - tail))}
