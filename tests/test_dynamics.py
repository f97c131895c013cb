"""Measurements of the training dynamics: pairwise F1, attention over history, Eq. (1), per-checkpoint tables."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.dynamics import (
    MeasureConfig,
    attention_label_shares,
    attention_table,
    cluster_sample,
    cluster_scores,
    clustering_table,
    dual_form,
    inner_loss_rows,
    last_token_attention,
    measure_run,
    measure_synthetic_checkpoint,
    outer_product_weights,
    pair_counts,
    pairwise_f1,
    train_linear_sgd,
)
from helpers.synthetic import SyntheticConfig, make_dataset
from helpers.training import ModelConfig, TrainConfig, build_model, load_checkpoint, train_lm

pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------- pairwise F1


def test_pairwise_f1_by_hand():
    true = np.array([0, 0, 0, 1, 1, 1])
    pred = np.array([5, 5, 7, 7, 9, 9])
    # together in pred: (0,1) (2,3) (4,5); together in truth: 3 + 3 pairs; both: (0,1) (4,5)
    assert pair_counts(true, pred) == (2, 3, 6)
    s = pairwise_f1(true, pred)
    assert s["precision"] == pytest.approx(2 / 3)
    assert s["recall"] == pytest.approx(1 / 3)
    assert s["f1"] == pytest.approx(4 / 9)


def test_pairwise_f1_properties():
    true = np.array([0, 0, 1, 1, 2, 2, 2])
    assert pairwise_f1(true, true)["f1"] == 1.0
    assert pairwise_f1(true, np.array([3, 3, 0, 0, 1, 1, 1]))["f1"] == 1.0  # names do not matter
    one = pairwise_f1(true, np.zeros(7, int))  # everything together: recall 1, precision = share of true pairs
    assert one["recall"] == 1.0 and one["precision"] == pytest.approx(5 / 21)
    single = pairwise_f1(true, np.arange(7))  # all singletons: nothing recalled
    assert single["f1"] == 0.0
    # symmetric in its arguments up to swapping precision and recall
    a, b = np.array([0, 0, 1, 1, 1, 2]), np.array([0, 1, 1, 1, 2, 2])
    assert pairwise_f1(a, b)["precision"] == pytest.approx(pairwise_f1(b, a)["recall"])


def test_pairwise_counts_match_sklearn():
    from sklearn.metrics.cluster import pair_confusion_matrix

    rng = np.random.default_rng(0)
    a, b = rng.integers(4, size=60), rng.integers(5, size=60)
    both, pred, true = pair_counts(a, b)
    m = pair_confusion_matrix(a, b) // 2  # sklearn counts ordered pairs
    assert both == m[1, 1] and true == m[1, 1] + m[1, 0] and pred == m[1, 1] + m[0, 1]


def test_cluster_scores_on_separated_blobs():
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 30)
    centers = np.array([[0, 0], [10, 0], [0, 10]])
    x = centers[labels] + 0.3 * rng.standard_normal((90, 2))
    s = cluster_scores(x, labels)
    assert s["k"] == 3 and s["f1"] == 1.0 and s["ari"] == pytest.approx(1.0) and s["nmi"] == pytest.approx(1.0)
    assert s["f1_chance"] < 0.6
    # noise carries no label information
    noise = cluster_scores(rng.standard_normal((90, 2)), labels)
    assert noise["ari"] < 0.2
    table = clustering_table(np.stack([x, rng.standard_normal((90, 2))]), {"a": labels, "b": labels % 2})
    assert len(table) == 4 and set(table["label"]) == {"a", "b"}
    assert table.query("layer == 0 and label == 'a'")["f1"].item() == 1.0


def test_cluster_sample_positions():
    rows, cols = cluster_sample(10, 20, 50, min_position=4, seed=0)
    assert len(rows) == 50 and cols.min() >= 4 and cols.max() < 20 and rows.max() < 10
    assert len({(r, c) for r, c in zip(rows, cols, strict=True)}) == 50


# ---------------------------------------------------------------- attention over history


def test_attention_label_shares_by_hand():
    w = np.array([[0.50, 0.20, 0.15, 0.10, 0.05],
                  [0.05, 0.05, 0.10, 0.30, 0.50]])
    hist = np.array([[1, 1, 0, 0, 0],
                     [2, 2, 2, 3, 2]])
    query = np.array([1, 2])
    s = attention_label_shares(w, hist, query, k=2)
    # row 0: top-2 = positions 0,1 (both label 1) -> 1.0; bottom-2 = 4,3 -> 0.0; base rate 2/5; mass 0.7
    # row 1: top-2 = 4,3 -> labels 2,3 -> 0.5; bottom-2 = 0,1 (tie, earlier first) -> 1.0; base 4/5; mass 0.7
    assert s["top"] == pytest.approx((1.0 + 0.5) / 2)
    assert s["bottom"] == pytest.approx((0.0 + 1.0) / 2)
    assert s["chance"] == pytest.approx((0.4 + 0.8) / 2)
    assert s["mass"] == pytest.approx((0.7 + 0.7) / 2)
    # the 2 nearest positions: row 0 -> labels 0,0 -> 0.0; row 1 -> labels 3,2 -> 0.5
    assert s["recent"] == pytest.approx((0.0 + 0.5) / 2)
    # uniform attention with unique labels puts mass exactly at the base rate
    u = attention_label_shares(np.full((3, 4), 0.25), np.array([[0, 1, 2, 3]] * 3), np.array([0, 1, 5]), k=1)
    assert u["mass"] == pytest.approx(u["chance"]) == pytest.approx(2 / 12)
    with pytest.raises(ValueError):
        attention_label_shares(w, hist[:, :3], query)


def test_attention_table_layers_and_labels():
    rng = np.random.default_rng(0)
    attn = rng.random((3, 8, 6))
    hist = {"a": rng.integers(2, size=(8, 6)), "b": rng.integers(3, size=(8, 6))}
    query = {"a": rng.integers(2, size=8), "b": rng.integers(3, size=8)}
    t = attention_table(attn, hist, query, k=2)
    assert len(t) == 6 and set(t["layer"]) == {0, 1, 2}
    row = t.query("layer == 1 and label == 'b'").iloc[0]
    assert row["top"] == pytest.approx(attention_label_shares(attn[1], hist["b"], query["b"], 2)["top"])


def test_last_token_attention_matches_model_weights():
    model = build_model(ModelConfig(vocab_size=11, n_positions=16, n_layer=2, n_head=2, n_embd=16), seed=0).eval()
    ids = np.random.default_rng(0).integers(11, size=(5, 9))
    got = last_token_attention(model, ids, batch_size=2)
    assert got.shape == (2, 5, 8)
    with torch.no_grad():
        att = model(input_ids=torch.as_tensor(ids), output_attentions=True).attentions
    expect = torch.stack([a[:, :, -1, :-1].mean(1) for a in att]).numpy()
    np.testing.assert_allclose(got, expect, atol=1e-6)
    assert np.all(got.sum(-1) < 1.0 + 1e-6)  # the remaining mass is on the query itself


# ---------------------------------------------------------------- Eq. (1)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_eq1_outer_product_identity_and_dual_form(dtype, tol):
    rng = np.random.default_rng(0)
    d_in, d_out, steps = 7, 4, 80
    w0 = rng.standard_normal((d_out, d_in)) * 0.1
    xs = rng.standard_normal((steps, d_in))
    ys = np.argmax(xs @ rng.standard_normal((d_out, d_in)).T, axis=1)  # a learnable teacher
    lrs = 0.3 / np.sqrt(1 + np.arange(steps))
    rec = train_linear_sgd(w0, xs, ys, lrs, dtype=dtype)
    assert rec.losses[-20:].mean() < rec.losses[:20].mean()  # it did learn something
    recon = outer_product_weights(rec.w0, rec.xs, rec.grads, rec.lrs)
    scale = np.abs(rec.w_final).max()
    assert np.abs(recon - rec.w_final).max() <= tol * scale
    assert np.abs(rec.w_final - rec.w0).max() > 100 * tol * scale  # the identity is not trivial
    x_new = rng.standard_normal(d_in).astype(rec.xs.dtype)
    dual = dual_form(rec.w0, rec.xs, rec.grads, rec.lrs, x_new)
    assert np.abs(dual["output"] - rec.w_final @ x_new).max() <= 10 * tol * np.abs(dual["output"]).max()
    np.testing.assert_allclose(dual["scores"], rec.xs @ x_new, rtol=1e-6)
    # softmax CE gradients sum to zero over the outputs
    np.testing.assert_allclose(rec.grads.sum(1), 0, atol=10 * tol)
    # with momentum the plain sum of outer products no longer gives W_T
    mom = train_linear_sgd(w0, xs, ys, lrs, dtype=dtype, momentum=0.9)
    assert np.abs(outer_product_weights(mom.w0, mom.xs, mom.grads, mom.lrs) - mom.w_final).max() > 1e-2 * scale


# ---------------------------------------------------------------- per-checkpoint measurements


def test_inner_loss_rows_subsets():
    inner = np.array([[3.0, 0.5], [2.0, 2.0], [np.nan, np.nan]])
    final = np.array([0.5, 2.0, np.nan])
    rows = inner_loss_rows(inner, final)
    by = {(r["subset"], r["layer"]): r for r in rows}
    assert by[("all", 0)]["mean"] == 2.5 and by[("all", 0)]["n"] == 2
    assert by[("final<=1", 1)]["mean"] == 0.5 and by[("final<=1", 1)]["n"] == 1


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    data = make_dataset(SyntheticConfig(n_tasks=2, vocab_size=5, seq_len=16, min_segment=4, max_segment=6,
                                        n_train=64, n_val=24))
    run = train_lm(ModelConfig(vocab_size=5, n_positions=17, n_layer=2, n_head=2, n_embd=16),
                   TrainConfig(epochs=1, batch_size=16), data.train.tokens, data.val.tokens,
                   tmp_path_factory.mktemp("run"), progress=False)
    return data, run


def test_measure_synthetic_checkpoint_tables(tiny_run):
    data, run = tiny_run
    mcfg = MeasureConfig(n_outer=16, n_inner=8, n_norm=8, n_cluster=60, n_attention=10, top_k=3,
                         kmeans_n_init=1, batch_size=8)
    lm = load_checkpoint(run.final)
    out = measure_synthetic_checkpoint(lm, data, mcfg)
    assert {r["split"] for r in out["outer"]} == {"train", "val"}
    inner = [r for r in out["inner"] if r["subset"] == "all"]
    assert [r["layer"] for r in inner] == [0, 1] and all(r["n"] == 8 * 12 for r in inner)
    assert all(r["steps"] == 1 and 0 <= r["pair_pct"] <= 100 for r in out["norms"])
    clus = out["clustering"]
    assert len(clus) == 3 * 3  # layers 0..L x three labels
    assert {r["label"] for r in clus} == {"task", "next", "pair"}
    assert all(0 <= r["f1"] <= 1 for r in clus)
    att = out["attention"]
    assert len(att) == 2 * 3 and all(0 <= r["chance"] <= 1 for r in att)


def test_measure_run_caches(tiny_run):
    data, run = tiny_run
    mcfg = MeasureConfig(n_outer=8, n_inner=4, n_norm=4, n_cluster=40, n_attention=6, top_k=3,
                         kmeans_n_init=1, batch_size=8)
    calls = []

    def measure(lm):
        calls.append(1)
        return measure_synthetic_checkpoint(lm, data, mcfg)

    first = measure_run(run.checkpoints, measure, mcfg, "test", progress=False)
    again = measure_run(run.checkpoints, measure, mcfg, "test", progress=False)
    assert len(calls) == len(run.checkpoints) == 2
    assert sorted(first["outer"]["epoch"].unique()) == [0, 1]
    assert first["clustering"].equals(again["clustering"])
