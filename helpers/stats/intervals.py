"""Intervals for the norm statistics: the cluster bootstrap (texts are the clusters, tokens of one text are not
independent), Table 1's percentile CIs, and paired model-minus-twin differences on the same tokens.

The percentile bootstrap degenerates to a point when every resample gives the same share (0% or 100%) and is
unreliable with few clusters; there (:func:`degenerate`) the shares fall back to a Wilson interval on the effective
sample size after the design effect (:func:`helpers.stats.nulls.share_interval`) and differences to Newcombe's
hybrid score interval built from those, so no interval in a table is ever ``[x, x]``.
"""

from __future__ import annotations

import numpy as np

from helpers.stats.monotone import step_ok
from helpers.stats.nulls import share_interval

MIN_CLUSTERS = 30  # fewer texts than this: the percentile cluster bootstrap is not trusted


def degenerate(point: float, ci: tuple[float, float], n_clusters: int) -> bool:
    """Whether a percentile-bootstrap interval (%) cannot be used: a point, a share of 0% or 100%, or fewer than
    :data:`MIN_CLUSTERS` clusters."""
    return ci[1] - ci[0] <= 1e-9 or point <= 0.0 or point >= 100.0 or n_clusters < MIN_CLUSTERS


def cluster_resamples(groups: np.ndarray, n_boot: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Each token's cluster index [N] and, per bootstrap resample of the clusters (drawn with replacement, seeded),
    how often each cluster is drawn [n_boot, clusters]: the one resampling every cluster bootstrap here uses."""
    uniq, inverse = np.unique(np.asarray(groups), return_inverse=True)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(uniq), (n_boot, len(uniq)))
    return inverse, np.stack([np.bincount(d, minlength=len(uniq)) for d in draws])


def cluster_bootstrap(
    per_token: dict[str, np.ndarray], groups: np.ndarray, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """Percentile CIs (in %) of the token means of each array in ``per_token``, resampling whole groups (texts):
    tokens of one text are not independent. The same draws serve every array."""
    inverse, counts = cluster_resamples(groups, n_boot, seed)
    g_n = np.bincount(inverse, minlength=counts.shape[1]).astype(np.float64)
    tot = counts @ g_n
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for name, values in per_token.items():
        boot = 100 * (counts @ np.bincount(inverse, weights=values, minlength=counts.shape[1])) / tot
        out[name] = (float(np.percentile(boot, lo)), float(np.percentile(boot, hi)))
    return out


def bootstrap_ci(
    traj: np.ndarray,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    tolerance: float = 0.0,
) -> dict:
    """95% CIs (%) of sequence_pct and pair_pct of norm trajectories [N, S] (:func:`indicator_ci` of their steps;
    a step may fall by ``tolerance`` of the norm)."""
    return indicator_ci(step_ok(traj, tolerance), groups, n_boot, level, seed)


def indicator_ci(ok: np.ndarray, groups: np.ndarray | None = None, n_boot: int = 1000, level: float = 0.95,
                 seed: int = 0) -> dict:
    """95% CIs (%) of sequence_pct (every step of a token true) and pair_pct (share of steps true) of step
    indicators ``ok`` [N, S]: the percentile cluster bootstrap over ``groups`` (e.g. the text id of each token;
    every token its own group when None), or where it degenerates (:func:`degenerate`) a Wilson interval with the
    design effect of the clusters (a sequence is one trial per token, a pair one per step). ``method`` says which
    ("bootstrap" or "Wilson"; both names when the two statistics differ)."""
    ok = np.asarray(ok, dtype=bool)
    groups = np.arange(len(ok)) if groups is None else np.asarray(groups)
    seq, pair = ok.all(axis=1).astype(np.float64), ok.mean(axis=1)
    out: dict = cluster_bootstrap({"sequence_pct": seq, "pair_pct": pair}, groups, n_boot, level, seed)
    n_clusters, methods = len(np.unique(groups)), []
    for name, point, trials, clusters in (("sequence_pct", 100 * seq.mean(), seq, groups),
                                          ("pair_pct", 100 * ok.mean(), ok.ravel(), np.repeat(groups, ok.shape[1]))):
        if degenerate(point, out[name], n_clusters):
            out[name] = share_interval(trials, clusters)
            methods.append("Wilson")
        else:
            methods.append("bootstrap")
    out["method"] = methods[0] if methods[0] == methods[1] else "/".join(methods)
    return out


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
    out = {k: (float(100 * d.mean()), *ci[k]) for k, d in diffs.items()}
    n_clusters = len(np.unique(groups))
    trials = {"sequence_pct": (ok_a.all(axis=1), ok_b.all(axis=1), groups),
              "pair_pct": (ok_a.ravel(), ok_b.ravel(), np.repeat(groups, ok_a.shape[1]))}
    for k, (d, lo, hi) in out.items():
        if hi - lo > 1e-9 and n_clusters >= MIN_CLUSTERS:
            continue
        out[k] = (d, *newcombe_difference(*trials[k]))
    return out


def newcombe_difference(a: np.ndarray, b: np.ndarray, clusters: np.ndarray) -> tuple[float, float]:
    """95% interval (percentage points) of share(a) - share(b) by Newcombe's hybrid score method from the two
    shares' design-effect Wilson intervals (conservative for paired data: it ignores the positive correlation)."""
    pa, pb = 100 * float(np.mean(a)), 100 * float(np.mean(b))
    (la, ua), (lb, ub) = share_interval(a, clusters), share_interval(b, clusters)
    d = pa - pb
    return d - float(np.hypot(pa - la, ub - pb)), d + float(np.hypot(ua - pa, pb - lb))


def ci_text(lo: float, hi: float, digits: int = 1, sign: bool = False) -> str:
    """``[lo, hi]`` with ``digits`` decimals, more (up to 4) where the two ends would print alike: an interval never
    reads as a point unless it is one."""
    fmt = "{:+.%df}" if sign else "{:.%df}"
    for d in range(digits, 5):
        a, b = (fmt % d).format(lo), (fmt % d).format(hi)
        if a != b or lo == hi:
            return f"[{a}, {b}]"
    return f"[{a}, {b}]"
