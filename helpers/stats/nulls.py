"""Nulls for Conjecture 4.1 that keep what the trained model has and randomise one thing, and intervals that never
collapse to a point.

A step ``z -> z + dz`` does not lower the norm exactly when ``cos(z, dz) >= -|dz| / (2 |z|)``. With the trained
model's ``|z|`` and ``|dz|`` kept and the direction of ``dz`` drawn uniformly on the sphere of ``R^d``,
``(1 + cos) / 2 ~ Beta((d - 1) / 2, (d - 1) / 2)``, so the chance of a non-decreasing step has a closed form
(:func:`p_nondecrease_random_direction`); the sequence level of a token is then the product over its steps.
"""

from __future__ import annotations

import numpy as np
from scipy import stats


def nondecrease_margin(z: np.ndarray, dz: np.ndarray) -> dict[str, np.ndarray]:
    """The exact decomposition of a step: ``cos(z, dz)``, ``r = |dz| / |z|`` and whether ``cos >= -r / 2`` (the
    step keeps the norm from falling), for states ``z`` and updates ``dz`` of shape [..., d], in float64."""
    z, dz = np.asarray(z, dtype=np.float64), np.asarray(dz, dtype=np.float64)
    nz, ndz = np.linalg.norm(z, axis=-1), np.linalg.norm(dz, axis=-1)
    cos = np.einsum("...d,...d->...", z, dz) / np.maximum(nz * ndz, np.finfo(np.float64).tiny)
    r = ndz / np.maximum(nz, np.finfo(np.float64).tiny)
    return {"cos": cos, "r": r, "nondecreasing": cos >= -r / 2}


def nondecreasing(dot: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """Whether ``|z + dz| >= |z|`` from ``<z, dz>`` and ``|dz|`` (exact: ``2 <z, dz> + |dz|^2 >= 0``); NaN in, False
    out (callers mask missing partners)."""
    return 2 * np.asarray(dot) + np.asarray(dz) ** 2 >= 0


def p_nondecrease_random_direction(r: np.ndarray | float, d: int) -> np.ndarray:
    """P(|z + dz| >= |z|) when ``|dz| = r |z|`` and the direction of ``dz`` is uniform on the sphere of ``R^d``:
    P(cos >= -r/2) with ``(1 + cos) / 2 ~ Beta((d-1)/2, (d-1)/2)``; 1 for ``r >= 2``."""
    if d < 2:
        raise ValueError(f"need d >= 2, got {d}")
    a = (d - 1) / 2
    threshold = np.clip((1 - np.asarray(r, dtype=np.float64) / 2) / 2, 0.0, 1.0)
    return stats.beta.sf(threshold, a, a)


def predicted_rates(r: np.ndarray, d: int) -> dict[str, np.ndarray | float]:
    """The direction-randomised null's predictions from the trained model's step sizes ``r`` [tokens, steps]:
    per step the probability of a non-decreasing step, per token the sequence level (product over its steps,
    directions independent), and the expected pair and sequence rates (%)."""
    p = p_nondecrease_random_direction(r, d)
    seq = np.prod(p, axis=-1)
    return {"p_step": p, "p_sequence": seq, "pair_pct": 100 * float(p.mean()), "sequence_pct": 100 * float(seq.mean())}


def wilson(k: float, n: float, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval (%) of ``k`` successes in ``n`` trials (non-integer counts allowed: effective
    sizes after a design effect). Never a point: 0 of n gives [0, > 0], n of n gives [< 100, 100]."""
    if n <= 0:
        return float("nan"), float("nan")
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return 100 * max(0.0, centre - half), 100 * min(1.0, centre + half)


def design_effect(successes: np.ndarray, clusters: np.ndarray) -> float:
    """Variance inflation of a share when trials come in clusters (tokens of one text): the cluster-robust
    variance of the share over the binomial one, at least 1. At a share of 0 or 1 the data carry no estimate of
    it, so the worst case is taken: the mean cluster size (every text's tokens perfectly correlated, the
    effective sample the number of texts); 1 with one cluster."""
    y = np.asarray(successes, dtype=np.float64)
    _, idx = np.unique(np.asarray(clusters), return_inverse=True)
    n, c = len(y), idx.max() + 1 if len(y) else 0
    p = y.mean() if n else 0.0
    if c < 2:
        return 1.0
    if p in (0.0, 1.0):
        return n / c
    resid = np.bincount(idx, weights=y - p, minlength=c)
    var_cluster = c / (c - 1) * float((resid ** 2).sum()) / n ** 2
    return max(1.0, var_cluster / (p * (1 - p) / n))


def share_interval(successes: np.ndarray, clusters: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Interval (%, 95% by default) of a share of clustered trials: Wilson on the effective sample size
    ``n / deff``; used where the percentile cluster bootstrap degenerates (0%, 100%, or fewer than 30 clusters)."""
    y = np.asarray(successes, dtype=np.float64)
    deff = design_effect(y, clusters)
    return wilson(y.sum() / deff, len(y) / deff, z=float(stats.norm.ppf(0.5 + level / 2)))
