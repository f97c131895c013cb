"""The powered descent test: both gradients against finite differences (float64, every family), the records'
internal identities (line search at alpha = 0 and 1, descent flags from the dot products), the thirds, and the
two-sided statistics (Holm, the cluster-robust p-value against its simulation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAMILIES, tiny_model

from helpers.experiments import descent_powered as dp
from helpers.experiments import descent_powered_tables as tables
from helpers.experiments.descent_tables import layer_thirds
from helpers.lm.families import halfstep_module
from helpers.report import findings_descent as fd
from helpers.residual.hooks import capture_halfsteps, pad_batch
from helpers.residual.splice import (
    block_keys_values,
    continuation_losses,
    path_grads,
    predictor_losses,
    stacked_keys_values,
)
from helpers.stats import descent as sd

ROWS = [[5, 17, 3, 44, 9, 61, 2, 30, 21], [8, 1, 90, 33, 12, 4], [7, 7, 25, 64, 70, 11, 38, 50]]
TOKENS = [(0, 4), (0, 7), (1, 3), (2, 6)]


def _tiny64(family: str):
    """A tiny model in float64; OPT's ReLU is swapped for GELU, so no kink sits inside a finite-difference step
    (the test is about the gradient code, not the activation)."""
    lm = tiny_model(family, "eager")
    lm.model.double()
    for blk in lm.blocks:
        if family == "opt":
            blk.activation_fn = torch.nn.GELU()
    return lm


@pytest.mark.parametrize("family", FAMILIES)
def test_both_gradients_match_finite_differences(family):
    """<g, u> = (L(z + eps u) - L(z - eps u)) / 2 eps for the Eq. 14 gradient (predictor) and the true loss's
    gradient (continuation through the rest of the network), at every layer, in float64."""
    lm = _tiny64(family)
    ids, mask = pad_batch(ROWS)
    cap, _ = capture_halfsteps(lm, ids, mask, every_block=True)
    n, b = lm.n_layers, len(ROWS)
    r = torch.tensor([x for x, _ in TOKENS])
    c = torch.tensor([x for _, x in TOKENS])
    t = ids[r, c + 1]
    kv_last = stacked_keys_values(lm, n - 1, cap.states[:n], cap.block_kwargs)
    blocks = block_keys_values(lm, cap.states, cap.layer_kwargs)
    true = path_grads(lm, blocks, cap.layer_kwargs, r, c, cap.states[0][r, c], t,
                      halfstep_module(lm.family, lm.model.config) is not None)
    gen = torch.Generator().manual_seed(1)
    # Softmax and RMSNorm compute in float32 even in a float64 model, so a difference below ~1e-4 sees float32
    # noise; each directional derivative must match at one of three steps.
    steps = (1e-3, 3e-4, 1e-4)

    def check(loss_at, g, z, u):
        fd = np.stack([((loss_at(z + e * u) - loss_at(z - e * u)) / (2 * e)).numpy() for e in steps])
        exact = (g * u).sum(-1).numpy()
        err = np.abs(fd - exact).min(axis=0)
        assert (err <= 1e-4 + 1e-3 * np.abs(exact)).all(), (fd, exact, layer)

    for layer in range(n):
        z = cap.states[layer][r, c]
        u = torch.randn(z.shape, generator=gen, dtype=z.dtype)
        u = u / u.norm(dim=-1, keepdim=True)
        kv_rows = layer * b + r
        _, g = predictor_losses(lm, kv_last, cap.block_kwargs, kv_rows, r, c, z, t, grad=True)
        check(lambda x, kv_rows=kv_rows: predictor_losses(lm, kv_last, cap.block_kwargs, kv_rows, r, c, x, t)[0],
              g, z, u)
        start = torch.full_like(r, layer)
        check(lambda x, start=start: continuation_losses(lm, blocks, cap.layer_kwargs, start, r, c, x, t),
              true["grads"][:, layer], z, u)

@pytest.mark.parametrize("family", ["llama", "gemma3", "gpt_neox"])
def test_records_identities(family):
    """alpha = 0 of line search (a) is the inner loss before the step, alpha = 1 of (b) the model's own loss; the
    descent flags are the sign of <dz, g> (cos < 0 iff ascent); the subset alone has controls; thirds leave out
    the predictor layer."""
    lm = tiny_model(family, "sdpa")
    sample = dp.PositionSample(["wikitext-103"] * 3, [0, 1, 2], ROWS, [[4, 7], [3], [6]])
    df = dp.run_powered(lm, sample, line_tokens=3, alphas=(0.0, 1.0, 2.0), seed=0)
    assert len(df) == len(sample) * lm.n_layers
    np.testing.assert_allclose(df["a_block_0"].dropna(), df.loc[df["line"], "loss_in"], rtol=1e-6)
    np.testing.assert_allclose(df["b_block_1"].dropna(), df.loc[df["line"], "final_loss"], rtol=1e-6)
    assert df["line"].sum() == 3 * lm.n_layers
    assert df.loc[~df["line"], "desc_true_rand_block"].isna().all()
    assert df.loc[df["line"], "desc_true_rand_block"].notna().all()
    assert ((df["cos_inner_block"] > 0) == (df["desc_inner_block"] == 1)).all()
    assert set(df.loc[df["layer"] == lm.n_layers - 1, "third"]) == {"predictor"}
    # at the predictor layer the Eq. 14 loss is the model's loss: the two gradients coincide
    last = df[df["layer"] == lm.n_layers - 1]
    np.testing.assert_allclose(last["cos_grads"], 1.0, atol=1e-5)
    assert (last["desc_inner_block"] == last["desc_true_block"]).all()
    has_half = halfstep_module(lm.family, lm.model.config) is not None
    assert ("cos_true_ffn" in df) == has_half
    # the block update at alpha = 1 through the rest of the network is the model's loss, whatever the layer
    last = df.groupby(["text", "position"])["final_loss"].nunique()
    assert (last == 1).all()
    for step in ("block", "attn", "ffn") if has_half else ("block",):
        np.testing.assert_allclose(df[f"b_{step}_1"].dropna(), df.loc[df["line"], "final_loss"], rtol=1e-6)
        assert df.loc[df["line"], f"b_{step}_0"].notna().all() and df.loc[~df["line"], f"b_{step}_2"].isna().all()


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_cached_records_gain_halfstep_line_search(family, tmp_path):
    """Records cached without line search (b) of the half-steps get exactly the columns a fresh run computes."""
    lm = tiny_model(family, "sdpa")
    sample = dp.PositionSample(["wikitext-103"] * 3, [0, 1, 2], ROWS, [[4, 7], [3], [6]])
    fresh = dp.run_powered(lm, sample, line_tokens=3, alphas=(0.0, 1.0, 2.0), cache_dir=str(tmp_path))
    (cached,) = (tmp_path / "descent_powered").glob("*.csv")
    old = pd.read_csv(cached)
    half = [k for k in old if k.startswith(("b_attn_", "b_ffn_"))]
    assert len(half) == 6
    old.drop(columns=half).to_csv(cached, index=False)
    upgraded = dp.run_powered(lm, sample, line_tokens=3, alphas=(0.0, 1.0, 2.0), cache_dir=str(tmp_path))
    pd.testing.assert_frame_equal(upgraded[fresh.columns], fresh, rtol=1e-5, check_dtype=False)
    assert set(half) <= set(pd.read_csv(cached).columns)


def test_sample_positions_context_and_counts():
    lm = tiny_model("llama")
    lm.encode = lambda texts, max_tokens: [list(range(1, min(max_tokens, len(t)) + 1)) for t in texts]
    texts = {"wikitext-103": ["x" * 50, "x" * 12], "1bw": ["x" * 9, "x" * 4]}
    s = dp.sample_positions(lm, texts, max_tokens=40, per_text=3, min_context=20)
    assert s.positions[0] and all(20 <= p <= 38 for p in s.positions[0]) and len(s.positions[0]) == 3
    assert len(s.positions[1]) == 1 and 4 <= s.positions[1][0] <= 10  # too short for the context: one token
    assert len(s.rows) == 3  # the 4-token sentence is skipped
    for row, pos in zip(s.rows, s.positions, strict=True):
        assert len(row) == pos[-1] + 2  # the row ends at the last current token's target


def test_caption_states_the_context_the_sample_applied():
    """A model with a 64-token window cannot give 128 tokens of context: the sample takes the second half of its
    window (>= 32), and the caption says so (it printed the profile's 128)."""
    lm = tiny_model("gpt2")
    lm.model.config.n_positions = 64
    assert lm.context == 64
    lm.encode = lambda texts, max_tokens: [list(range(1, min(max_tokens, len(t)) + 1)) for t in texts]
    s = dp.sample_positions(lm, {"wikitext-103": ["x" * 200], "1bw": ["x" * 9]}, max_tokens=256, per_text=4,
                            min_context=128)
    assert s.min_context == 32 and all(32 <= p <= 62 for p in s.positions[0])
    caption = dp.sample_caption("m", s, per_text=4, line_tokens=100, seed=0, profile="default")
    assert "positions >= 32" in caption and "128" not in caption
    long = tiny_model("llama")
    long.model.config.max_position_embeddings = 2048
    long.encode = lm.encode
    assert dp.sample_positions(long, {"wikitext-103": ["x" * 200]}, 256, 4, 128).min_context == 128


def test_holm_and_verdicts():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.5])
    adj = sd.holm(p)
    np.testing.assert_allclose(adj[[0, 2, 1, 4]], [0.04, 0.09, 0.09, 0.5])
    assert np.isnan(adj[3])
    assert sd.verdict(60, 0.01) == "descends" and sd.verdict(40, 0.01) == "ascends"
    assert sd.verdict(60, 0.2) == "not distinguishable"


def test_cluster_pvalue_matches_simulation():
    """Under the null (share 50%, clustered tokens) the cluster-robust p-value rejects about 5% of the time; a
    naive binomial test that ignores the clusters rejects far more often."""
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), 8)
    rejections, naive = 0, 0
    for _ in range(400):
        text_effect = rng.normal(0, 1.0, 60)[groups]
        x = (rng.normal(0, 1.0, len(groups)) + text_effect > 0).astype(float)
        rejections += sd.cluster_z_pvalue(x, groups, 0.5) < 0.05
        naive += sd.cluster_z_pvalue(x, np.arange(len(x)), 0.5) < 0.05
    assert 0.02 <= rejections / 400 <= 0.09
    assert naive / 400 > 0.2


def _synthetic_records(n_texts: int = 40, n_layers: int = 7, seed: int = 0) -> pd.DataFrame:
    """Records where the trained model's block updates descend in the first third (90%), ascend in the last (10%)
    and are coin flips in the middle; the twin is a coin flip everywhere."""
    rng = np.random.default_rng(seed)
    thirds = layer_thirds(n_layers - 1).tolist() + ["predictor"]
    rows = []
    for weights in ("trained", "untrained twin"):
        for text in range(n_texts):
            for layer in range(n_layers):
                p = 0.5 if weights != "trained" else {"first": 0.9, "last": 0.1}.get(thirds[layer], 0.5)
                d = float(rng.random() < p)
                rows.append({"model": "M", "weights": weights, "dataset": "wikitext-103", "text": text,
                             "position": 130, "layer": layer, "third": thirds[layer], "cluster": f"w:{text}",
                             "desc_inner_block": d, "cos_inner_block": 0.1 if d else -0.1,
                             "desc_true_block": d, "cos_true_block": 0.1 if d else -0.1, "cos_grads": 0.5})
    return pd.DataFrame(rows)


def test_verdicts_come_out_both_ways_and_render():
    """The rule can say 'descends', 'ascends' and 'not distinguishable' on one table, and the brief and the
    reading render those verdicts with intervals and the twin difference."""
    rec = _synthetic_records()
    th = tables.powered_by_third(rec, n_boot=200)
    block = th[(th.weights == "trained") & (th.gradient == "true")].set_index("third")
    assert block.loc["first", "verdict"] == "descends" and block.loc["last", "verdict"] == "ascends"
    assert block.loc["middle", "verdict"] == "not distinguishable"
    assert block.loc["first", "minus_twin_lo"] > 0 > block.loc["last", "minus_twin_hi"]
    assert (th.ci_hi > th.ci_lo).all()  # no interval collapses to a point
    assert fd.brief_cell(th, "M") == ("Eq. 14: descends in the first third, not distinguishable in the middle third, "
                                      "ascends in the last third; true loss: descends in the first third, not "
                                      "distinguishable in the middle third, ascends in the last third")
    text = fd.powered_reading(th, None, tables.gradient_agreement(rec, n_boot=50))
    assert "**descends**" in text and "**ascends**" in text and "**not distinguishable**" in text
