"""The powered descent test: the gradients against finite differences (float64, every family), the records'
internal identities (line search at alpha = 0 and 1, descent flags from the dot products), the stratified
subset, the thirds, and the two-sided statistics (the verdict rule, the minimiser and its interval, the
cluster-robust p-value against its simulation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import FAMILIES, tiny_model

from helpers.experiments import descent_slopes as dp
from helpers.experiments import descent_slopes_tables as tables
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
    descent flags are the sign of <dz, g> (cos < 0 iff ascent); the subset alone has the controls and the
    start-of-step slope; thirds leave out the predictor layer; the twin's records lack reading (b)."""
    lm = tiny_model(family, "sdpa")
    sample = dp.PositionSample(["wikitext-103"] * 2 + ["1bw"], [0, 1, 0], ROWS, [[4, 7], [3], [6]])
    df = dp.run_powered(lm, sample, line_texts=1, alphas=(0.0, 1.0, 2.0), seed=0)
    assert len(df) == len(sample) * lm.n_layers
    line = df["line"].astype(bool)
    assert line.sum() == 2 * lm.n_layers  # one token of the first text of each corpus
    assert df.loc[line, "cluster"].nunique() == 2 and set(df.loc[line, "dataset"]) == {"wikitext-103", "1bw"}
    np.testing.assert_allclose(df["a_block_0"].dropna(), df.loc[line, "loss_in"], rtol=1e-6)
    np.testing.assert_allclose(df["b_block_1"].dropna(), df.loc[line, "final_loss"], rtol=1e-6)
    for col in ("desc_true_rand_block", "desc_true_block", "slope_true_block"):
        assert df.loc[~line, col].isna().all() and df.loc[line, col].notna().all()
    assert ((df["cos_inner_block"] > 0) == (df["desc_inner_block"] == 1)).all()
    assert ((df["slope_true_end_block"] < 0) == (df["desc_true_end_block"] == 1)).all()
    assert set(df.loc[df["layer"] == lm.n_layers - 1, "third"]) == {"predictor"}
    # at the predictor layer the Eq. 14 loss is the model's loss: its gradient is dL/dz_l
    np.testing.assert_allclose(df.loc[df["layer"] == lm.n_layers - 1, "cos_grads"], 1.0, atol=1e-5)
    has_half = halfstep_module(lm.family, lm.model.config) is not None
    assert ("cos_true_end_ffn" in df) == has_half
    assert (df.groupby(["text", "position"])["final_loss"].nunique() == 1).all()
    for step in ("block", "attn", "ffn") if has_half else ("block",):
        np.testing.assert_allclose(df[f"b_{step}_1"].dropna(), df.loc[line, "final_loss"], rtol=1e-6)
        assert df.loc[line, f"b_{step}_0"].notna().all() and df.loc[~line, f"b_{step}_2"].isna().all()
    by_layer = tables.powered_by_layer(df, n_boot=50)
    true = by_layer[by_layer.gradient == "true"]
    assert len(true) and true.descent_pct.notna().all() and (true.n_tokens == 2).all()  # the subset's tokens only
    twin = dp.run_powered(lm, sample, line_texts=1, alphas=(0.0, 1.0, 2.0), weights="untrained twin")
    assert twin["b_block_2"].isna().all() and twin.loc[twin["line"].astype(bool), "slope_true_block"].notna().all()


def test_line_subset_is_stratified_one_token_per_text():
    """The subset takes one token from each of the first ``line_texts`` texts of every corpus, whatever the
    tokens per text."""
    sample = dp.PositionSample(["wikitext-103"] * 4 + ["1bw"] * 3, list(range(4)) + list(range(3)), [[1]] * 7,
                               [[5, 6, 7], [5, 9], [8], [4, 6], [3], [4], [5]])
    assert [sum(f) for f in dp.line_subset(sample, 2, seed=0)] == [1, 1, 0, 0, 1, 1, 0]
    assert all(sum(f) == 1 for f in dp.line_subset(sample, 10, seed=0))


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
    caption = dp.sample_caption("m", s, per_text=4, line_texts=30, seed=0, profile="default")
    assert "positions >= 32" in caption and "128" not in caption
    long = tiny_model("llama")
    long.model.config.max_position_embeddings = 2048
    long.encode = lm.encode
    assert dp.sample_positions(long, {"wikitext-103": ["x" * 200]}, 256, 4, 128).min_context == 128


def test_verdict_rule_needs_the_interval_the_effect_and_the_twin():
    """'descends' needs all three conditions; each failing one gives 'not distinguishable' with its reason; the
    mirror image gives 'ascends'."""
    assert sd.descent_verdict(60, 55, 65, 2, 9) == ("descends", "")
    assert sd.descent_verdict(40, 35, 45, -9, -2) == ("ascends", "")
    assert sd.descent_verdict(52, 50.5, 53.5, 1, 3) == ("not distinguishable", "within 3 pp of 50%")
    assert sd.descent_verdict(60, 55, 65, -1, 4) == ("not distinguishable", "the untrained twin as far from 50%")
    assert sd.descent_verdict(60, 49, 71, 2, 9) == ("not distinguishable", "interval includes 50%")
    assert sd.descent_verdict(60, 55, 65) == ("descends", "")  # a twin row: no twin check


def test_parabola_minimiser_and_its_interval():
    """The vertex of an exact parabola sampled on the grid; the lowest end of a monotone curve; the bootstrap
    interval of noisy clustered curves covers the true minimiser and is not a point."""
    alphas = np.array([-1, -0.5, 0, 0.5, 1, 1.5, 2, 3, 4], dtype=float)
    assert abs(sd.parabola_minimiser(alphas, (alphas - 1.3) ** 2) - 1.3) < 1e-12
    assert sd.parabola_minimiser(alphas, -alphas) == 4.0  # falls to the edge: clipped to the grid
    assert abs(sd.parabola_minimiser(alphas, (alphas - 2.6) ** 2) - 2.6) < 1e-12  # between uneven points
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(40), 3)
    losses = (alphas - 1.3) ** 2 + rng.normal(0, 0.3, (40, 1))[groups] + rng.normal(0, 0.3, (120, 9))
    out = sd.minimiser_interval(alphas, losses, groups, n_boot=300)
    assert out["lo"] < 1.3 < out["hi"] and out["hi"] - out["lo"] > 0.01


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


def _subset_records(n_texts: int = 40, n_layers: int = 7, seed: int = 0) -> pd.DataFrame:
    """Subset records of one trained model: removing the gradient component costs 0.5 nats in the first third and
    as much as a random part elsewhere; reading (a)'s curve is a parabola with its minimum at alpha = 1.3."""
    rng = np.random.default_rng(seed)
    thirds = layer_thirds(n_layers - 1).tolist() + ["predictor"]
    alphas = (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)
    rows = []
    for text in range(n_texts):
        for layer in range(n_layers):
            row = {"model": "M", "weights": "trained", "dataset": "wikitext-103", "text": text, "position": 130,
                   "layer": layer, "third": thirds[layer], "cluster": f"w:{text}", "line": True}
            noise = rng.normal(0, 0.05)
            for a in alphas:
                row[f"a_block_{a:g}"] = 3 + (a - 1.3) ** 2 + noise + rng.normal(0, 0.01)
            gain = 0.5 if thirds[layer] == "first" else 0.1
            row |= {"abl_a_inner_block_gradient": gain + rng.normal(0, 0.05),
                    "abl_a_inner_block_random": 0.1 + rng.normal(0, 0.05),
                    "abl_a_inner_block_orthogonal": 0.2 + rng.normal(0, 0.05)}
            rows.append(row)
    return pd.DataFrame(rows)


def test_line_search_minimiser_and_ablation_tables():
    """The line search finds alpha* = 1.3 with an interval that holds it; the ablation says 'the gradient part
    does the work' where removing it costs more than a random part and 'a random part costs as much' where not."""
    rec = _subset_records()
    line = tables.line_search(rec, n_boot=200)
    assert set(line.reading) == {"a"} and (line.n_texts == 40).all()
    assert np.allclose(line.best_alpha, 1.3, atol=0.05) and ((line.best_lo <= 1.3) & (line.best_hi >= 1.3)).all()
    assert (line.verdict == "helps, alpha=1.5 better").all()  # removal costs, and 1.5 beats 1
    ab = tables.ablation(rec, n_boot=200).set_index(["third", "component"])
    assert ab.loc[("first", "gradient"), "verdict"] == "the gradient part does the work"
    assert ab.loc[("last", "gradient"), "verdict"] == "a random part costs as much"
    assert ab.loc[("first", "gradient"), "n_tokens"] == 40 and (ab.ci_hi > ab.ci_lo).all()
    assert set(ab.reset_index().component) == {"gradient", "random", "orthogonal"}


def test_a_killed_run_resumes_with_the_same_records(tmp_path, monkeypatch):
    """Notebook 07 part 2 keeps its records batch by batch: a run killed after two batches resumes at the third and
    gives exactly the records of a run in one go, random controls and ablations included (the generator's state
    is kept with each batch); a finished run computes nothing."""
    lm = tiny_model("llama", "sdpa")
    sample = dp.PositionSample(["wikitext-103"] * 2 + ["1bw"], [0, 1, 0], ROWS, [[4, 7], [3], [6]])
    kw = dict(line_texts=1, alphas=(0.0, 1.0, 2.0), seed=0, batch_tokens=8)  # one row per batch: three batches
    whole = dp.run_powered(lm, sample, cache_dir=str(tmp_path / "a"), **kw)
    real, calls = dp.batch_records, []

    def dies_after_two(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(dp, "batch_records", dies_after_two)
    with pytest.raises(KeyboardInterrupt):
        dp.run_powered(lm, sample, cache_dir=str(tmp_path / "b"), **kw)
    calls.clear()
    calls.append(1)  # one more call allowed: the resumed run computes the third batch only
    resumed = dp.run_powered(lm, sample, cache_dir=str(tmp_path / "b"), **kw)
    pd.testing.assert_frame_equal(whole, resumed)
    random_cols = [c for c in whole if "rand" in c or "random" in c]
    assert random_cols and whole[random_cols].notna().any().any()
    assert len(calls) == 2
    again = dp.run_powered(lm, sample, cache_dir=str(tmp_path / "b"), **kw)  # complete: no batch computed
    pd.testing.assert_frame_equal(whole, again)
    assert len(calls) == 2


@pytest.mark.parametrize("weights", ["trained", "untrained twin"])
def test_batched_records_equal_unbatched_ones(weights):
    """Each token's random draws (wrong target, random ablation directions) are its own: the records of three
    one-row batches equal those of one batch of three rows, random controls included, so ``batch_tokens`` is a
    memory setting and nothing else."""
    lm = tiny_model("llama", "sdpa")
    sample = dp.PositionSample(["wikitext-103"] * 2 + ["1bw"], [0, 1, 0], ROWS, [[4, 7], [3], [6]])
    kw = dict(line_texts=2, alphas=(0.0, 1.0, 2.0), seed=0, weights=weights)
    apart = dp.run_powered(lm, sample, batch_tokens=8, **kw)  # one row per batch
    together = dp.run_powered(lm, sample, batch_tokens=999, **kw)
    random_cols = [c for c in apart if "rand" in c or "random" in c]
    assert random_cols and apart[random_cols].notna().any().any()
    pd.testing.assert_frame_equal(apart, together, check_exact=False, rtol=1e-4, atol=1e-6)
    other = dp.run_powered(lm, sample, batch_tokens=8, **kw | {"seed": 1})  # the seed does move the draws
    assert not np.allclose(other["abl_a_true_block_random"].fillna(0), apart["abl_a_true_block_random"].fillna(0))
