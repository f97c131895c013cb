"""Synthetic Markov-chain tasks: generator statistics, seeds, labels, oracle loss."""

from __future__ import annotations

import numpy as np
import pytest

from helpers.corpus.synthetic import (
    SyntheticConfig,
    SyntheticSplit,
    bigram_loss,
    entropy_rate,
    make_dataset,
    make_tasks,
    oracle_loss,
    row_entropy,
    sample_chains,
    sample_task_segments,
    stationary_distribution,
    task_seeds,
    token_labels,
    transition_matrix,
)

TINY = SyntheticConfig(n_tasks=3, vocab_size=6, alpha=0.3, seq_len=40, min_segment=5, max_segment=9,
                       n_train=200, n_val=50)


def test_rows_are_distributions():
    tasks = make_tasks(TINY)
    assert tasks.shape == (3, 6, 6)
    assert np.all(tasks >= 0)
    np.testing.assert_allclose(tasks.sum(axis=-1), 1.0, atol=1e-12)


def test_same_seed_same_task_and_seeds_differ():
    a = transition_matrix(6, 0.3, seed=7)
    b = transition_matrix(6, 0.3, seed=7)
    c = transition_matrix(6, 0.3, seed=8)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # task k of a config is the matrix of seed task_seed + k
    cfg = SyntheticConfig(n_tasks=2, vocab_size=6, alpha=0.3, task_seed=7)
    assert task_seeds(cfg) == [7, 8]
    np.testing.assert_array_equal(make_tasks(cfg)[1], c)


def test_dataset_is_deterministic_and_splits_are_disjoint():
    d1, d2 = make_dataset(TINY), make_dataset(TINY)
    np.testing.assert_array_equal(d1.train.tokens, d2.train.tokens)
    np.testing.assert_array_equal(d1.val.tasks, d2.val.tasks)
    assert d1.train.tokens.shape == (200, 41) and d1.val.tokens.shape == (50, 41)
    train_rows = {r.tobytes() for r in d1.train.tokens}
    assert not any(r.tobytes() in train_rows for r in d1.val.tokens)
    other = make_dataset(SyntheticConfig(**{**TINY.as_dict(), "data_seed": 99}))
    assert not np.array_equal(other.train.tokens, d1.train.tokens)


def test_segments_have_allowed_lengths_and_switch_task():
    rng = np.random.default_rng(0)
    tasks = sample_task_segments(50, 60, n_tasks=3, min_segment=5, max_segment=9, rng=rng)
    for row in tasks:
        change = np.flatnonzero(np.diff(row)) + 1
        bounds = np.concatenate([[0], change, [len(row)]])
        lengths = np.diff(bounds)
        assert np.all(lengths[:-1] >= 5) and np.all(lengths[:-1] <= 9)  # the last one may be cut
        assert lengths[-1] <= 9
        assert np.all(row[change] != row[change - 1])
    assert set(np.unique(tasks)) == {0, 1, 2}


def test_chain_follows_its_task():
    # a sparse task: zero-probability transitions must never be drawn
    tasks = make_tasks(SyntheticConfig(n_tasks=2, vocab_size=5, alpha=0.05))
    rng = np.random.default_rng(1)
    z = sample_task_segments(400, 50, 2, 5, 10, rng)
    x = sample_chains(tasks, z, rng)
    probs = tasks[z[:, :-1], x[:, :-1], x[:, 1:]]
    assert probs.min() > 0
    # empirical transition frequencies of task 0 match its matrix
    counts = np.zeros((5, 5))
    sel = z[:, :-1] == 0
    np.add.at(counts, (x[:, :-1][sel], x[:, 1:][sel]), 1)
    seen = counts.sum(1) > 500
    assert seen.any()
    emp = counts[seen] / counts[seen].sum(1, keepdims=True)
    np.testing.assert_allclose(emp, tasks[0][seen], atol=0.05)


def test_labels_are_task_next_and_pair():
    data = make_dataset(TINY)
    split = data.train
    lab = token_labels(split.tokens, split.tasks, TINY.vocab_size)
    np.testing.assert_array_equal(lab["next"], split.tokens[:, 1:])
    np.testing.assert_array_equal(lab["task"], split.tasks[:, :-1])
    np.testing.assert_array_equal(lab["pair"], split.tasks[:, :-1] * 6 + split.tokens[:, 1:])
    assert split.labels("next").shape == split.inputs.shape == (200, 40)
    # the pair label determines both others
    np.testing.assert_array_equal(lab["pair"] // 6, lab["task"])
    np.testing.assert_array_equal(lab["pair"] % 6, lab["next"])


def test_entropies_and_oracle():
    v = 6
    uniform = np.full((v, v), 1 / v)
    perm = np.eye(v)[np.roll(np.arange(v), 1)]
    assert entropy_rate(uniform) == pytest.approx(np.log(v))
    assert entropy_rate(perm) == pytest.approx(0.0)
    np.testing.assert_allclose(row_entropy(perm), 0.0)
    p = transition_matrix(v, 0.5, 3)
    pi = stationary_distribution(p)
    np.testing.assert_allclose(pi @ p, pi, atol=1e-10)
    # oracle: the true task's row entropy; equal to log V for uniform tasks
    tokens = np.random.default_rng(0).integers(v, size=(10, 21))
    split = SyntheticSplit(tokens, np.zeros_like(tokens), v)
    assert oracle_loss(uniform[None], split) == pytest.approx(np.log(v))


def test_oracle_is_a_floor():
    data = make_dataset(TINY)
    oracle = oracle_loss(data.transitions, data.val)
    # the empirical cross-entropy of the true probabilities estimates the oracle
    true_p = data.transitions[data.val.tasks[:, :-1], data.val.inputs, data.val.targets]
    assert -np.log(true_p).mean() == pytest.approx(oracle, abs=0.1)
    # a task-agnostic bigram model is worse than the oracle, and better than uniform guessing
    big = bigram_loss(data.train, data.val)
    assert oracle < big < np.log(TINY.vocab_size)
