"""Training dynamics: pairwise F1 and attention shares (label_metrics), per-checkpoint measurements
(measures) and the Eq. (1) identity (eq1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers.config import Eq1Profile, MeasureConfig, ModelConfig, TrainConfig
from helpers.corpus.synthetic import SyntheticConfig, make_dataset
from helpers.experiments.eq1 import (
    dual_form,
    dual_form_check,
    identity_table,
    make_task,
    outer_product_weights,
    train_linear_sgd,
)
from helpers.lm.load import wrap_model
from helpers.stats.labels import (
    attention_label_shares,
    attention_table,
    cluster_scores,
    clustering_table,
    pair_counts,
    pairwise_f1,
)
from helpers.stats.monotone import monotone_stats
from helpers.train.checkpoints import load_checkpoint
from helpers.train.loop import build_model, train_lm
from helpers.train.measures import (
    cluster_sample,
    inner_loss_rows,
    last_token_attention,
    measure_lm_checkpoint,
    measure_run,
    measure_synthetic_checkpoint,
    window_records,
)

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


def test_attention_shares_are_per_head_then_averaged():
    """Issue 9c: ranking the head-averaged weights is not the paper's statistic; rank per head, then average."""
    # history of 4 positions; the query's label is carried by positions 0 and 1
    hist = np.array([[1, 1, 0, 0]])
    query = np.array([1])
    heads = np.array([[[0.50, 0.00, 0.45, 0.05],    # head 0: most attended = position 0 (same label)
                       [0.00, 0.50, 0.45, 0.05]]])  # head 1: most attended = position 1 (same label)
    per_head = attention_label_shares(heads, hist, query, k=1)
    assert per_head["top"] == 1.0  # every head's top-1 carries the label
    # the head average [0.25, 0.25, 0.45, 0.05] ranks position 2 (other label) first: a different answer
    averaged_first = attention_label_shares(heads.mean(axis=1), hist, query, k=1)
    assert averaged_first["top"] == 0.0
    # bottom-1: position 1 for head 0 (same label), position 0 for head 1 (same label) -> 1.0 per head,
    # while the averaged weights put position 3 (other label) last
    assert per_head["bottom"] == 1.0 and averaged_first["bottom"] == 0.0
    assert per_head["mass"] == pytest.approx((0.5 + 0.5) / 2)
    assert per_head["chance"] == 0.5 and per_head["recent"] == 0.0
    # a 2-D input is one head
    assert attention_label_shares(heads[:, 0], hist, query, k=1)["top"] == 1.0


def test_last_token_attention_is_per_head():
    model = build_model(ModelConfig(vocab_size=11, n_positions=16, n_layer=2, n_head=2, n_embd=16), seed=0).eval()
    ids = np.random.default_rng(0).integers(11, size=(5, 9))
    got = last_token_attention(model, ids, batch_size=2)
    assert got.shape == (2, 5, 2, 8)  # [blocks, queries, heads, history]
    with torch.no_grad():
        att = model(input_ids=torch.as_tensor(ids), output_attentions=True).attentions
    expect = torch.stack([a[:, :, -1, :-1] for a in att]).numpy()
    np.testing.assert_allclose(got, expect, atol=1e-6)
    assert np.all(got.sum(-1) < 1.0 + 1e-6)  # the remaining mass is on the query itself
    hist = np.random.default_rng(1).integers(3, size=(5, 8))
    t = attention_table(got, {"a": hist}, {"a": hist[:, -1]}, k=3)
    assert t.query("layer == 1")["top"].item() == pytest.approx(attention_label_shares(got[1], hist, hist[:, -1], 3)["top"])


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
    assert by[("all", 0)]["model_loss"] == by[("all", 1)]["model_loss"] == 1.25  # same tokens, every layer
    assert by[("final<=1", 0)]["model_loss"] == 0.5


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


def _direct_ce(model, windows: np.ndarray, min_position: int) -> float:
    """Mean next-token cross-entropy of ``model``'s own logits on the read positions >= min_position."""
    ids = torch.as_tensor(windows)
    with torch.no_grad():
        logits = model(input_ids=ids[:, :-1]).logits[:, min_position:]
    return float(torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                   ids[:, 1 + min_position :].reshape(-1)))


def test_norm_stats_use_the_read_positions_only(tiny_run):
    """Issue 9a: windows are [N, T+1]; position T is never read in training, so no norm statistic uses it."""
    data, run = tiny_run
    mcfg = MeasureConfig(n_outer=4, n_inner=2, n_norm=len(data.val), batch_size=8)
    lm = load_checkpoint(run.final)
    norms = {r["tokens"]: r for r in measure_lm_checkpoint(lm, data.train.tokens, data.val.tokens, mcfg)["norms"]}
    t = data.val.seq_len
    with torch.no_grad():  # independent: the model's own hidden states (inputs of blocks 0..L-1) on the T read tokens
        hs = lm.model(input_ids=torch.as_tensor(data.val.tokens[:, :t]), output_hidden_states=True).hidden_states
    traj = torch.stack([h.norm(dim=-1) for h in hs[: lm.n_layers]], dim=-1).numpy()  # [N, T, L]
    for tokens, start in ((f"position>={mcfg.min_position}", mcfg.min_position), ("all positions", 0)):
        expect = monotone_stats(traj[:, start:].reshape(-1, lm.n_layers))
        got = norms[tokens]
        assert got["n"] == expect["n"] == len(data.val) * (t - start)
        assert got["sequence_pct"] == pytest.approx(expect["sequence_pct"])
        assert got["pair_pct"] == pytest.approx(expect["pair_pct"])


@pytest.mark.parametrize("trained", [False, True], ids=["random", "trained"])
def test_model_loss_beside_the_inner_loss_on_the_same_tokens(tiny_run, trained):
    """Issue 9b: the inner-loss rows carry the model's own loss on exactly their tokens, and the last
    layer's inner loss (Eq. 14 with the model's own mask) equals it."""
    data, run = tiny_run
    lm = load_checkpoint(run.final if trained else run.checkpoints[0])
    windows = data.train.tokens
    mcfg = MeasureConfig(n_outer=4, n_inner=len(windows), n_norm=2, batch_size=16)
    rows = measure_lm_checkpoint(lm, windows, data.val.tokens, mcfg)["inner"]
    last = {r["subset"]: r for r in rows if r["layer"] == lm.n_layers - 1}
    assert last["all"]["model_loss"] == pytest.approx(_direct_ce(lm.model, windows, mcfg.min_position), abs=1e-4)
    for subset, r in last.items():
        if r["n"]:
            assert r["mean"] == pytest.approx(r["model_loss"], abs=1e-4), subset
    for r in rows:  # one value per subset, on every layer's row (NaN for an empty subset)
        np.testing.assert_equal(r["model_loss"], last[r["subset"]]["model_loss"])


def test_random_eager_gpt2_last_inner_loss_is_the_model_loss():
    model = build_model(ModelConfig(vocab_size=13, n_positions=17, n_layer=3, n_head=2, n_embd=16), seed=1)
    lm = wrap_model(model, None, name="tiny-gpt2-eager")
    windows = np.random.default_rng(0).integers(13, size=(6, 17))
    rows = measure_lm_checkpoint(lm, windows, windows, MeasureConfig(n_outer=6, n_inner=6, n_norm=6,
                                                                     batch_size=4))["inner"]
    last = next(r for r in rows if r["subset"] == "all" and r["layer"] == 2)
    assert last["n"] == 6 * (16 - 4)
    assert last["mean"] == pytest.approx(last["model_loss"], abs=1e-4)
    assert last["model_loss"] == pytest.approx(_direct_ce(model, windows, 4), abs=1e-4)
    # token by token (so on any subset, e.g. the paper's final loss <= 1): last inner loss = own loss
    rec = window_records(lm, windows, MeasureConfig(batch_size=4), lens=True)
    has = ~np.isnan(rec["final_loss"])
    assert has.sum() == 6 * 12 and rec["position"].max() == 15
    np.testing.assert_allclose(rec["inner_loss"][has, -1], rec["final_loss"][has], atol=1e-4)


def test_notebook00_experiment_reproduces_eq1():
    task = make_task(Eq1Profile(d_in=6, d_out=3, steps=40, n_new=5), seed=0)
    table, records = identity_table(task)
    assert list(table["training"]) == [name for name in records]
    rel = dict(zip(table["training"], table["relative error"], strict=True))
    assert rel["float64"] < 1e-12 and rel["float32"] < 1e-5 and rel["float64, SGD with momentum 0.9"] > 1e-3
    check = dual_form_check(records["float64"], task.x_new)
    assert check["primal"].shape == (5, 3) and check["max_error"] < 1e-12 * max(1.0, check["max_output"])
    assert check["contributions"].shape == (40,) and np.all(check["contributions"] >= 0)
