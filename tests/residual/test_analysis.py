"""Exact minimal work: the lens on the selected tokens only gives the full computation's numbers on them."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import TEXTS, tiny_model, tiny_with_tok

from helpers.config import MAX_FINAL_LOSS
from helpers.residual import records
from helpers.residual.records import analyse_batch, sample_mask
from helpers.runs.analysis import AnalysisConfig, run_analysis
from helpers.runs.batching import make_batches, padding_share
from helpers.stats import tokens as reports

ROWS = [[5, 17, 3, 99, 42, 8, 61, 23, 7, 11, 2, 90], [4, 4, 8, 15, 16, 23, 42], [1, 2, 3, 4, 5, 6, 7, 8, 9]]


def covered_equal(restricted: dict, full: dict, lens_key: str) -> np.ndarray:
    """Assert the restricted lens equals the full one wherever it ran; return where it ran."""
    ran = ~np.isnan(restricted[lens_key]).all(axis=1)
    np.testing.assert_allclose(restricted[lens_key][ran], full[lens_key][ran], rtol=1e-5, atol=1e-5)
    assert np.isnan(restricted[lens_key][~ran]).all()
    return ran


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_sampled_lens_equals_full_lens_on_its_tokens(family):
    lm = tiny_model(family, attn="eager")
    full = analyse_batch(lm, ROWS, min_position=2)
    part = analyse_batch(lm, ROWS, min_position=2, lens_share=0.4, keys=[10, 11, 12], seed=3)
    for key in ("norms", "final_loss", "position", "target"):
        np.testing.assert_array_equal(part[key], full[key], err_msg=key)
    ran = covered_equal(part, full, "inner_loss")
    assert (covered_equal(part, full, "logit_lens") == ran).all()
    has = part["target"] >= 0
    # tiny random models never reach final loss <= 1: the lens ran exactly on the random share
    assert (full["final_loss"][has] > MAX_FINAL_LOSS).all()
    np.testing.assert_array_equal(ran, part["lens_sampled"])
    assert 0 < part["lens_sampled"].sum() < has.sum()
    assert not part["lens_sampled"][~has].any()


def test_filtered_tokens_always_get_the_lens(monkeypatch):
    """Every token the paper's filter keeps gets the lens, whatever the random share (here 0)."""

    lm = tiny_model("llama")
    full = analyse_batch(lm, ROWS, min_position=2)
    threshold = float(np.nanmedian(full["final_loss"]))
    monkeypatch.setattr(records, "MAX_FINAL_LOSS", threshold)
    part = analyse_batch(lm, ROWS, min_position=2, lens_share=0.0)
    ran = covered_equal(part, full, "inner_loss")
    np.testing.assert_array_equal(ran, np.nan_to_num(full["final_loss"], nan=np.inf) <= threshold)


def test_filter_share_keeps_a_seeded_share_of_the_filtered_tokens(monkeypatch, tmp_path):
    """With ``filter_share`` the lens runs on a seeded share of the filtered tokens (plus the random share), with the
    full run's numbers there, and the filtered curve equals the full run's curve over exactly those tokens."""

    lm = tiny_with_tok()
    base = AnalysisConfig(max_tokens=12, min_position=2, lens_share=None)
    full, _ = run_analysis(lm, TEXTS, base, cache_dir=str(tmp_path / "a"), progress=False)
    threshold = float(np.nanmedian(full["final_loss"]))  # tiny random models: half the tokens pass
    monkeypatch.setattr(records, "MAX_FINAL_LOSS", threshold)
    part, _ = run_analysis(lm, TEXTS, AnalysisConfig(max_tokens=12, min_position=2, lens_share=0.0, filter_share=0.5),
                           cache_dir=str(tmp_path / "b"), progress=False)
    ran = covered_equal(part, full, "inner_loss")
    passes = np.nan_to_num(full["final_loss"], nan=np.inf) <= threshold
    np.testing.assert_array_equal(ran, part["lens_filtered"])
    assert not (part["lens_filtered"] & ~passes).any()
    assert 0.3 < part["lens_filtered"].sum() / passes.sum() < 0.7  # about half of the filtered tokens
    kept = {k: v[part["lens_filtered"]] for k, v in full.items() if k in ("target", "final_loss", "inner_loss")}
    ours, ref = reports.loss_curves(part, threshold), reports.loss_curves(kept, threshold)
    ours, ref = ours[ours.lens == "inner_loss"], ref[ref.lens == "inner_loss"]
    np.testing.assert_allclose(ours["mean"], ref["mean"], rtol=1e-5)
    assert np.isfinite(ours["mean"]).all()
    has = full["target"] >= 0  # the share the filter passes, not the share that got the lens, names the filter
    assert ours["share_passing"].iloc[0] == pytest.approx(passes[has].mean())
    assert ours["share_kept"].iloc[0] == pytest.approx(part["lens_filtered"][has].mean())
    # the share is part of the run's key only when it is on: runs cached before it existed keep their keys
    assert "filter_share" not in base.key() and AnalysisConfig(filter_share=0.5).key()["filter_share"] == 0.5


def test_sample_mask_is_a_function_of_text_and_position():
    keys, pos = np.repeat(np.arange(200), 50), np.tile(np.arange(50), 200)
    m = sample_mask(keys, pos, 0.1, seed=0)
    assert abs(m.mean() - 0.1) < 0.01
    perm = np.random.default_rng(0).permutation(len(keys))
    np.testing.assert_array_equal(sample_mask(keys[perm], pos[perm], 0.1, seed=0), m[perm])
    assert (sample_mask(keys, pos, 0.1, seed=1) != m).any()
    assert sample_mask(keys, pos, 1.0).all() and not sample_mask(keys, pos, 0.0).any()


def test_pipeline_tables_equal_full_computation_on_covered_tokens(tmp_path):
    """Batching by tokens or rows, restricted or not: the same tokens get the same numbers, and the
    'all tokens' curve of the restricted run equals the full run's curve over the same random share."""
    lm = tiny_with_tok()
    full, _ = run_analysis(lm, TEXTS, AnalysisConfig(max_tokens=12, min_position=2, lens_share=None),
                           cache_dir=str(tmp_path / "a"), batch_size=4, progress=False)
    part, _ = run_analysis(lm, TEXTS, AnalysisConfig(max_tokens=12, min_position=2, lens_share=0.3),
                           cache_dir=str(tmp_path / "b"), batch_tokens=24, progress=False)
    again, _ = run_analysis(lm, TEXTS, AnalysisConfig(max_tokens=12, min_position=2, lens_share=0.3),
                            cache_dir=str(tmp_path / "c"), batch_size=1, batch_tokens=None, progress=False)
    for key in part:
        np.testing.assert_allclose(again[key], part[key], rtol=1e-5, atol=1e-6, err_msg=key)
    covered_equal(part, full, "inner_loss")
    sampled = {k: v[part["lens_sampled"]] for k, v in full.items() if k in ("target", "final_loss", "inner_loss",
                                                                             "logit_lens")}
    ours = reports.loss_curves(part, None)
    ref = reports.loss_curves(sampled, None)
    np.testing.assert_allclose(ours["mean"], ref["mean"], rtol=1e-5)
    assert (ours["n_tokens"] == part["lens_sampled"].sum()).all()


def _shortest_first_oracle(lengths: list[int], budget: int) -> list[list[int]]:
    """Notebook 07's own batcher before there was one batcher: its cached records were made in these batches."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out, s = [], 0
    while s < len(order):
        e = s + 1
        while e < len(order) and (e - s + 1) * lengths[order[e]] <= budget:
            e += 1
        out.append(order[s:e])
        s = e
    return out


def test_shortest_first_batches_are_notebook_07s():
    """The one batcher going shortest first gives exactly the batches notebook 07 cached its records in (its random
    controls are drawn batch by batch, so other batches would give other draws)."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        lengths = rng.integers(1, 60, size=int(rng.integers(1, 40))).tolist()
        budget = int(rng.integers(20, 400))
        assert make_batches(lengths, batch_tokens=budget, shortest_first=True) == _shortest_first_oracle(lengths, budget)


def test_token_budget_batches():
    lengths = [5, 30, 12, 30, 7, 1, 12, 20]
    batches = make_batches(lengths, batch_tokens=60)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) * max(lengths[i] for i in b) <= 60 for b in batches)
    assert batches == make_batches(lengths, batch_tokens=60)  # deterministic
    assert [lengths[b[0]] for b in batches] == sorted((lengths[b[0]] for b in batches), reverse=True)
    assert make_batches([100, 3], batch_tokens=10) == [[0], [1]]  # a long row gets its own batch
    assert all(len(b) <= 2 for b in make_batches(lengths, batch_size=2, batch_tokens=1000))
    assert padding_share([4, 2], [[0, 1]]) == pytest.approx(0.25)
    assert padding_share(lengths, [[i] for i in range(len(lengths))]) == 0.0


def test_chunks_group_similar_lengths_so_batches_carry_little_padding(tmp_path):
    """Texts of mixed lengths: chunks are formed longest first, so a chunk's batches pad little."""
    lm = tiny_with_tok()
    texts = [" ".join(f"w{i}x{j}" for j in range(4 + (i * 37) % 40)) for i in range(24)]
    _, store = run_analysis(lm, texts, AnalysisConfig(max_tokens=64, min_position=2, chunk_texts=4),
                            cache_dir=str(tmp_path), batch_tokens=80, progress=False)
    assert store.manifest()["padding_share"] < 0.15
