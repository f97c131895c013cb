"""Conjecture 4.1 taken apart (issue 21): how much of non-decrease is learned direction and how much is step size
and geometry.

Input: the per-token step records of :func:`helpers.residual.geometry.step_geometry` (``{kind}_z``, ``_dz``, ``_dot``
and the swap partners' ``_same_*`` / ``_other_*``, [N, L]). Every rate here uses the steps of Table 1 (blocks
0..L-2: layers 0..L-1, the last block's output left out as in the paper) unless ``steps`` says otherwise, and
compares three things on the same tokens:

- observed: the share of steps (pair level) and of tokens (sequence level) whose norm does not fall;
- the direction-randomised null: each step keeps its ``|z|`` and ``|dz|`` and draws the direction of ``dz``
  uniformly (closed form, :func:`helpers.stats.nulls.p_nondecrease_random_direction`);
- the swap nulls: the token's own state with another token's update at the same step (same text, another text).

``observed - direction null`` (paired, cluster bootstrap over texts) is the part of the rate that the update
*directions* carry: positive when the model learned to point updates away from ``-z``, negative when it learned
to shrink the stream.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from helpers.stats.intervals import cluster_bootstrap, degenerate, indicator_ci
from helpers.stats.nulls import nondecreasing, p_nondecrease_random_direction, share_interval


def table1_steps(geo: dict[str, np.ndarray], kind: str) -> slice:
    """The steps of ``kind`` that Table 1 counts: blocks 0..L-2 (and their half-steps)."""
    return slice(0, geo[f"{kind}_z"].shape[1] - 1)


def step_indicators(geo: dict[str, np.ndarray], kind: str, partner: str | None = None,
                    steps: slice | None = None) -> np.ndarray:
    """Bool [N, S]: does each step keep the norm from falling, with the token's own update (``partner`` None) or
    with the ``"same"``-text / ``"other"``-text partner's update."""
    steps = table1_steps(geo, kind) if steps is None else steps
    pre = f"{kind}_{partner}_" if partner else f"{kind}_"
    return nondecreasing(geo[f"{pre}dot"][:, steps], geo[f"{pre}dz"][:, steps])


def cos_and_ratio(geo: dict[str, np.ndarray], kind: str) -> tuple[np.ndarray, np.ndarray]:
    """``cos(z, dz)`` (NaN where ``dz = 0``) and ``r = |dz| / |z|`` of every step [N, L]."""
    z, dz, dot = geo[f"{kind}_z"], geo[f"{kind}_dz"], geo[f"{kind}_dot"]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(dz > 0, dot / (z * dz), np.nan), dz / z


def predicted_steps(geo: dict[str, np.ndarray], kind: str, d: int, steps: slice | None = None) -> np.ndarray:
    """The direction-randomised null's chance of a non-decreasing step [N, S] from the observed ``r`` (a step of
    exactly zero keeps the norm: probability 1)."""
    steps = table1_steps(geo, kind) if steps is None else steps
    _, r = cos_and_ratio(geo, kind)
    r = r[:, steps]
    return np.where(r > 0, p_nondecrease_random_direction(np.nan_to_num(r), d), 1.0)


def _expected_ci(values: np.ndarray, groups: np.ndarray, n_boot: int, seed: int) -> tuple[float, float]:
    """95% cluster-bootstrap CI (%) of the mean of per-token probabilities; a point only when every token has the
    same value, where the interval is widened to the Wilson interval of that share on the effective sample."""
    lo, hi = cluster_bootstrap({"v": values}, groups, n_boot, seed=seed)["v"]
    if degenerate(100 * float(values.mean()), (lo, hi), len(np.unique(groups))) and hi - lo <= 1e-9:
        return share_interval(values, groups)
    return lo, hi


def geometry_rates(geo: dict[str, np.ndarray], kind: str, d: int, n_boot: int = 1000, seed: int = 0) -> dict:
    """Observed, direction-null and swap-null rates (%) of ``kind`` steps with 95% intervals, and the paired
    difference observed - direction null (percentage points) with its cluster-bootstrap interval.

    Keys: ``n_tokens``, ``n_texts``, ``steps``; for ``stat`` in (pair, sequence): ``{stat}_pct`` / ``_lo`` / ``_hi``
    (observed), ``null_{stat}_pct`` / ``_lo`` / ``_hi`` (direction null), ``vs_null_{stat}_pp`` / ``_lo`` / ``_hi``,
    ``same_{stat}_pct``, ``other_{stat}_pct`` (swap nulls, on the tokens that have a partner); where the records
    have it, the covariance-matched direction null ``cov_{stat}_pct`` and ``vs_cov_{stat}_pp`` / ``_lo`` / ``_hi``."""
    groups = geo["text_id"]
    ok = step_indicators(geo, kind)
    p = predicted_steps(geo, kind, d)
    obs = indicator_ci(ok, groups, n_boot, seed=seed)
    out = {"kind": kind, "n_tokens": int(len(ok)), "n_texts": int(len(np.unique(groups))), "steps": int(ok.shape[1]),
           "interval": obs["method"]}
    per_token = {"pair": (ok.mean(axis=1), p.mean(axis=1)), "sequence": (ok.all(axis=1), p.prod(axis=1))}
    for stat, (o, e) in per_token.items():
        out[f"{stat}_pct"] = 100 * float(np.mean(o))
        out[f"{stat}_lo"], out[f"{stat}_hi"] = obs[f"{stat}_pct"]
        out[f"null_{stat}_pct"] = 100 * float(e.mean())
        out[f"null_{stat}_lo"], out[f"null_{stat}_hi"] = _expected_ci(e, groups, n_boot, seed)
        diff = np.asarray(o, dtype=np.float64) - e
        lo, hi = cluster_bootstrap({"d": diff}, groups, n_boot, seed=seed)["d"]
        out[f"vs_null_{stat}_pp"], out[f"vs_null_{stat}_lo"], out[f"vs_null_{stat}_hi"] = 100 * float(diff.mean()), lo, hi
    for partner in ("same", "other"):
        has = ~np.isnan(geo[f"{kind}_{partner}_dot"][:, table1_steps(geo, kind)]).any(axis=1)
        sw = step_indicators(geo, kind, partner)[has]
        out[f"{partner}_pair_pct"] = 100 * float(sw.mean()) if has.any() else np.nan
        out[f"{partner}_sequence_pct"] = 100 * float(sw.all(axis=1).mean()) if has.any() else np.nan
    if f"{kind}_cov_p" in geo:  # the covariance-matched direction null, paired with the observed steps
        cov = geo[f"{kind}_cov_p"][:, table1_steps(geo, kind)]
        keep = np.isfinite(cov).all(axis=1)
        for stat, (o, e) in {"pair": (ok.mean(axis=1), cov.mean(axis=1)),
                             "sequence": (ok.all(axis=1), cov.prod(axis=1))}.items():
            diff = (np.asarray(o, dtype=np.float64) - e)[keep]
            lo, hi = cluster_bootstrap({"d": diff}, groups[keep], n_boot, seed=seed)["d"]
            out[f"cov_{stat}_pct"] = 100 * float(e[keep].mean())
            out[f"vs_cov_{stat}_pp"], out[f"vs_cov_{stat}_lo"], out[f"vs_cov_{stat}_hi"] = 100 * float(diff.mean()), lo, hi
    return out


def verdict(low: float, high: float) -> str:
    """Reading of an interval of observed - null: "above the null", "below the null" or "not distinguishable"."""
    if low > 0:
        return "above the null"
    if high < 0:
        return "below the null"
    return "not distinguishable"


def by_layer(geo: dict[str, np.ndarray], kind: str, d: int) -> pd.DataFrame:
    """Per layer (every block, the last included) of ``kind`` steps: tokens, observed non-decrease %, the direction
    null's %, the swap nulls' %, and the quartiles of ``cos(z, dz)``, of ``r`` and of the threshold ``-r/2``."""
    every = slice(None)
    cos, r = cos_and_ratio(geo, kind)
    ok = step_indicators(geo, kind, steps=every)
    p = predicted_steps(geo, kind, d, steps=every)
    rows = []
    for layer in range(ok.shape[1]):
        c, rr = cos[:, layer], r[:, layer]
        row = {"kind": kind, "layer": layer, "n_tokens": int(len(c)), "observed_pct": 100 * float(ok[:, layer].mean()),
               "null_pct": 100 * float(p[:, layer].mean())}
        if f"{kind}_cov_p" in geo:
            row["cov_null_pct"] = 100 * float(np.nanmean(geo[f"{kind}_cov_p"][:, layer]))
        for partner in ("same", "other"):
            has = ~np.isnan(geo[f"{kind}_{partner}_dot"][:, layer])
            sw = step_indicators(geo, kind, partner, steps=slice(layer, layer + 1))[has, 0]
            row[f"{partner}_pct"] = 100 * float(sw.mean()) if has.any() else np.nan
        for name, v in (("cos", c), ("r", rr), ("threshold", -rr / 2)):
            q = np.nanquantile(v, [0.25, 0.5, 0.75]) if np.isfinite(v).any() else [np.nan] * 3
            row |= {f"{name}_q25": float(q[0]), f"{name}_median": float(q[1]), f"{name}_q75": float(q[2])}
        rows.append(row)
    return pd.DataFrame(rows)


POSITION_BINS = (4, 16, 32, 64, 128, 1 << 30)


def decrease_sources(geo: dict[str, np.ndarray], counts: dict[int, int] | None = None) -> pd.DataFrame:
    """Where the decreasing steps are (Table 1's steps): by sublayer (attention / MLP half-step), by third of the
    depth, by position and by how frequent the current token is in the sample (terciles of its count). Each row:
    the steps in that cell, how many of them decrease, the decrease rate (%), and the cell's share of the decreases
    (of both half-steps for the sublayer rows, of that sublayer's otherwise)."""
    kinds = [k for k in ("attn", "mlp") if f"{k}_z" in geo] or ["block"]
    n_tok = len(geo["text_id"])
    tokens = geo["token"]
    if counts is None:
        ids, cnt = np.unique(tokens, return_counts=True)
        counts = dict(zip(ids.tolist(), cnt.tolist(), strict=True))
    freq = np.array([counts.get(int(t), 0) for t in tokens], dtype=np.float64)
    cuts = np.quantile(freq, [1 / 3, 2 / 3]) if n_tok else np.array([0.0, 0.0])
    freq_bin = np.digitize(freq, cuts, right=True)
    pos_bin = np.digitize(geo["position"], POSITION_BINS[1:], right=False)
    cells = []
    for kind in kinds:
        dec = ~step_indicators(geo, kind)
        n_steps = dec.shape[1]
        third = np.minimum(3 * np.arange(n_steps) // max(1, n_steps), 2)
        for dim, labels, key in (
            ("sublayer", [kind], np.zeros_like(dec, dtype=int)),
            ("depth third", ["first", "middle", "last"], np.broadcast_to(third, dec.shape)),
            ("position", [f"{a + 1}-{b}" if b < 1 << 29 else f">{a}" for a, b in zip(POSITION_BINS, POSITION_BINS[1:],
                                                                                      strict=False)],
             np.broadcast_to(pos_bin[:, None], dec.shape)),
            ("token frequency", ["rare third", "middle third", "frequent third"],
             np.broadcast_to(freq_bin[:, None], dec.shape)),
        ):
            for i, label in enumerate(labels):
                cell = key == i
                if cell.any():
                    cells.append({"sublayer": kind, "dimension": dim, "cell": label, "steps": int(cell.sum()),
                                  "decreasing": int(dec[cell].sum())})
    df = pd.DataFrame(cells)
    if df.empty:
        return df
    df["decrease_pct"] = 100 * df.decreasing / df.steps
    total = {k: int((~step_indicators(geo, k)).sum()) for k in kinds}
    every = max(1, sum(total.values()))  # the sublayer rows share the decreases of both half-steps
    df["share_of_decreases_pct"] = [100 * d / (every if dim == "sublayer" else max(1, total[k]))
                                    for d, k, dim in zip(df.decreasing, df.sublayer, df.dimension, strict=True)]
    return df
