"""Monotonicity of residual-norm trajectories (Conjecture 4.1, Table 1): which steps do not decrease, the
sequence level (every step) and the pair level (neighbouring layers), and per-step rates.
"""

from __future__ import annotations

import numpy as np


def step_ok(traj: np.ndarray, tolerance: float = 0.0) -> np.ndarray:
    """Boolean [N, S-1]: is each step of each trajectory [N, S] non-decreasing, or (``tolerance`` > 0) falling by
    less than that fraction of the norm it starts from (the conjecture says "approximately" non-decreasing)?"""
    traj = np.asarray(traj, dtype=np.float64)
    if traj.ndim != 2 or traj.shape[1] < 2:
        raise ValueError(f"trajectories must be [N, S] with S >= 2, got shape {traj.shape}")
    if not 0.0 <= tolerance < 1.0:
        raise ValueError(f"tolerance must be in [0, 1), got {tolerance}")
    return traj[:, 1:] >= (1.0 - tolerance) * traj[:, :-1]


def monotone_stats(traj: np.ndarray, tolerance: float = 0.0) -> dict[str, float]:
    """Table 1 quantities for trajectories [N, S]: n, steps, sequence_pct, pair_pct (the depth-free per-step
    rate: the mean over every token's steps), chance_pct; steps may fall by up to ``tolerance`` of the norm."""
    ok = step_ok(traj, tolerance)
    steps = ok.shape[1]
    n = ok.shape[0]
    return {
        "n": int(n),
        "steps": int(steps),
        "sequence_pct": float(100 * ok.all(axis=1).mean()) if n else float("nan"),
        "pair_pct": float(100 * ok.mean()) if n else float("nan"),
        "chance_pct": float(100 * 2.0**-steps),
    }


def tolerance_sweep(traj: np.ndarray, tolerances: tuple[float, ...] = (0.0, 0.01, 0.05)) -> list[dict[str, float]]:
    """Sequence and pair level when a step may fall by up to each tolerance (a fraction of the norm)."""
    return [{"tolerance_pct": 100 * t, **monotone_stats(traj, t)} for t in tolerances]


def transition_rates(traj: np.ndarray) -> np.ndarray:
    """Share (%) of trajectories non-decreasing at each step l -> l+1, shape [S-1]."""
    return 100 * step_ok(traj).mean(axis=0)
