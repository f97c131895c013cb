"""Norm statistics of residual trajectories (Conjecture 4.1, Table 1).

A trajectory is one token's residual norms over layers 0..L-1 (the paper excludes the last block's
output). Sequence level: share of trajectories non-decreasing at every step; pair level: share of
neighbouring-layer pairs that do not decrease. Chance level for ``n`` steps is ``2^-n``.
"""

from __future__ import annotations

import numpy as np


def step_ok(traj: np.ndarray) -> np.ndarray:
    """Boolean [N, S-1]: is each step of each trajectory [N, S] non-decreasing?"""
    traj = np.asarray(traj, dtype=np.float64)
    if traj.ndim != 2 or traj.shape[1] < 2:
        raise ValueError(f"trajectories must be [N, S] with S >= 2, got shape {traj.shape}")
    return np.diff(traj, axis=1) >= 0


def monotone_stats(traj: np.ndarray) -> dict[str, float]:
    """Table 1 quantities for trajectories [N, S]: n, steps, sequence_pct, pair_pct, chance_pct."""
    ok = step_ok(traj)
    steps = ok.shape[1]
    n = ok.shape[0]
    return {
        "n": int(n),
        "steps": int(steps),
        "sequence_pct": float(100 * ok.all(axis=1).mean()) if n else float("nan"),
        "pair_pct": float(100 * ok.mean()) if n else float("nan"),
        "chance_pct": float(100 * 2.0**-steps),
    }


def transition_rates(traj: np.ndarray) -> np.ndarray:
    """Share (%) of trajectories non-decreasing at each step l -> l+1, shape [S-1]."""
    return 100 * step_ok(traj).mean(axis=0)


def bootstrap_ci(
    traj: np.ndarray,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs for sequence_pct and pair_pct.

    Tokens of one text are not independent, so when ``groups`` (e.g. the text id of each token) is
    given the bootstrap resamples whole groups (cluster bootstrap).
    """
    ok = step_ok(traj)
    seq = ok.all(axis=1).astype(np.float64)
    pair = ok.mean(axis=1)
    rng = np.random.default_rng(seed)
    if groups is None:
        groups = np.arange(len(seq))
    uniq, inverse = np.unique(np.asarray(groups), return_inverse=True)
    g_seq = np.bincount(inverse, weights=seq, minlength=len(uniq))
    g_pair = np.bincount(inverse, weights=pair, minlength=len(uniq))
    g_n = np.bincount(inverse, minlength=len(uniq)).astype(np.float64)
    draws = rng.integers(0, len(uniq), size=(n_boot, len(uniq)))
    counts = np.stack([np.bincount(d, minlength=len(uniq)) for d in draws])
    tot = counts @ g_n
    seq_b = 100 * (counts @ g_seq) / tot
    pair_b = 100 * (counts @ g_pair) / tot
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return {
        "sequence_pct": (float(np.percentile(seq_b, lo)), float(np.percentile(seq_b, hi))),
        "pair_pct": (float(np.percentile(pair_b, lo)), float(np.percentile(pair_b, hi))),
    }


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
    d_seq = ok_a.all(axis=1).astype(np.float64) - ok_b.all(axis=1)
    d_pair = ok_a.mean(axis=1) - ok_b.mean(axis=1)
    uniq, inverse = np.unique(np.asarray(groups), return_inverse=True)
    g_seq = np.bincount(inverse, weights=d_seq, minlength=len(uniq))
    g_pair = np.bincount(inverse, weights=d_pair, minlength=len(uniq))
    g_n = np.bincount(inverse, minlength=len(uniq)).astype(np.float64)
    rng = np.random.default_rng(seed)
    counts = np.stack([np.bincount(d, minlength=len(uniq)) for d in rng.integers(0, len(uniq), (n_boot, len(uniq)))])
    tot = counts @ g_n
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    out = {}
    for name, g, d in (("sequence_pct", g_seq, d_seq), ("pair_pct", g_pair, d_pair)):
        boot = 100 * (counts @ g) / tot
        out[name] = (float(100 * d.mean()), float(np.percentile(boot, lo)), float(np.percentile(boot, hi)))
    return out
