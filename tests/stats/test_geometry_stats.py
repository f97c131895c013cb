"""The decomposition statistics of notebook 09 on synthetic steps whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.stats.geometry import decrease_sources, geometry_rates, step_indicators


def synthetic(n_tok: int, n_layers: int, d: int, bias: float, seed: int = 0, r: float = 0.3) -> dict:
    """Steps with |dz| = r |z| and directions random (bias 0) or tilted towards z (bias > 0), partners = a shuffle."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n_tok, n_layers, d))
    u = rng.standard_normal((n_tok, n_layers, d)) + bias * z / np.sqrt(d)
    nz = np.linalg.norm(z, axis=-1)
    dz = u / np.linalg.norm(u, axis=-1, keepdims=True) * (r * nz)[..., None]
    geo = {"text_id": np.repeat(np.arange(n_tok // 4), 4), "position": np.tile(np.arange(4, 8), n_tok // 4),
           "token": rng.integers(0, 50, n_tok), "block_z": nz, "block_dz": np.linalg.norm(dz, axis=-1),
           "block_dot": np.einsum("nld,nld->nl", z, dz)}
    perm = rng.permutation(n_tok)
    for name in ("same", "other"):
        geo[f"block_{name}_dz"] = geo["block_dz"][perm]
        geo[f"block_{name}_dot"] = np.einsum("nld,nld->nl", z, dz[perm])
    return geo


def test_random_directions_match_the_direction_null():
    geo = synthetic(800, 6, 32, bias=0.0)
    st = geometry_rates(geo, "block", 32, n_boot=200)
    assert abs(st["vs_null_pair_pp"]) < 3 and st["vs_null_pair_lo"] < 0 < st["vs_null_pair_hi"]
    assert st["pair_lo"] < st["pair_hi"] and st["null_pair_lo"] < st["null_pair_hi"]
    assert abs(st["same_pair_pct"] - st["null_pair_pct"]) < 4  # a shuffled update is a random direction here


@pytest.mark.parametrize(("bias", "sign"), [(3.0, 1), (-3.0, -1)])
def test_aligned_directions_are_seen_on_both_sides(bias, sign):
    geo = synthetic(800, 6, 32, bias=bias)
    st = geometry_rates(geo, "block", 32, n_boot=200)
    lo, hi = st["vs_null_pair_lo"], st["vs_null_pair_hi"]
    assert (lo > 0) if sign > 0 else (hi < 0)


def test_decrease_sources_add_up():
    geo = synthetic(400, 6, 16, bias=-1.0)
    df = decrease_sources(geo)
    total = int((~step_indicators(geo, "block")).sum())
    for _, g in df.groupby("dimension"):
        assert g.decreasing.sum() == total and g.share_of_decreases_pct.sum() == pytest.approx(100.0)
    halves = dict(synthetic(400, 6, 16, bias=-1.0))
    for key in [k for k in halves if k.startswith("block_")]:  # two half-steps: the sublayer rows split the decreases
        halves[key.replace("block_", "attn_")] = halves[key]
        halves[key.replace("block_", "mlp_")] = halves[key][::-1].copy()
    sub = decrease_sources(halves)
    assert sub[sub.dimension == "sublayer"].share_of_decreases_pct.sum() == pytest.approx(100.0)
