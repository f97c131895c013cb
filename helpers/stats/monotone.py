"""Monotonicity of residual-norm trajectories (Conjecture 4.1, Table 1): which steps do not decrease, the
sequence level (every step) and the pair level (neighbouring layers), and per-step rates.
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
