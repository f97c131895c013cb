"""Synthetic in-context Markov-chain tasks for the training-dynamics experiments (v2 reconstruction).

The paper's v2 trains a Transformer from scratch on synthetic data whose tasks are identified by a
'seed'; its full text is not available, so this is a documented reconstruction in the spirit of
Nichani, Damian & Lee (ICML 2024):

- a *task* ``k`` is a first-order Markov chain over ``V`` tokens whose transition rows are drawn
  from a Dirichlet(alpha) prior with the task's own random seed ``task_seed + k`` (hence 'seed');
- a *sequence* of ``T + 1`` tokens is built from segments of randomly chosen tasks (consecutive
  segments use different tasks), so one context mixes tasks; the chain continues across a segment
  boundary from the current token with the new task's transition matrix;
- position ``t`` carries three labels: its task ``z_t`` (the task that draws ``x_{t+1}`` from
  ``x_t``), its next token ``x_{t+1}``, and the pair ``z_t * V + x_{t+1}``.

The model reads the first ``T`` tokens of a sequence; the extra token gives the last read position a
next token too (needed for the attention-over-history measurement). The oracle loss is the expected
cross-entropy of a predictor that knows the true task, i.e. the mean entropy of the true transition
rows ``H(P_{z_t}[x_t, :])`` over the positions read: a floor that no model can beat on average.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from helpers.config import SyntheticConfig

LABEL_KINDS = ("task", "next", "pair")


@dataclass
class SyntheticSplit:
    """One split: ``tokens`` [N, T+1] and ``tasks`` [N, T+1] (task drawing the token after each position)."""

    tokens: np.ndarray
    tasks: np.ndarray
    vocab_size: int

    @property
    def seq_len(self) -> int:
        """T: the number of tokens the model reads."""
        return self.tokens.shape[1] - 1

    @property
    def inputs(self) -> np.ndarray:
        """Tokens the model reads, [N, T]."""
        return self.tokens[:, :-1]

    @property
    def targets(self) -> np.ndarray:
        """Next tokens of the positions read, [N, T]."""
        return self.tokens[:, 1:]

    def labels(self, kind: str) -> np.ndarray:
        """Labels [N, T] of the positions read: ``task``, ``next`` (next token) or ``pair``."""
        return token_labels(self.tokens, self.tasks, self.vocab_size)[kind]

    def __len__(self) -> int:
        return self.tokens.shape[0]


@dataclass
class SyntheticData:
    """Train and validation splits (disjoint sequences) with the true transition matrices [K, V, V]."""

    config: SyntheticConfig
    transitions: np.ndarray
    train: SyntheticSplit
    val: SyntheticSplit


def transition_matrix(vocab_size: int, alpha: float, seed: int) -> np.ndarray:
    """A [V, V] row-stochastic matrix whose rows are i.i.d. Dirichlet(alpha) draws from ``seed``."""
    if vocab_size < 2 or alpha <= 0:
        raise ValueError(f"need vocab_size >= 2 and alpha > 0, got {vocab_size}, {alpha}")
    rng = np.random.default_rng(seed)
    rows = rng.dirichlet(np.full(vocab_size, float(alpha)), size=vocab_size)
    return rows / rows.sum(axis=1, keepdims=True)


def task_seeds(config: SyntheticConfig) -> list[int]:
    """The random seed of every task: ``task_seed + k``."""
    return [config.task_seed + k for k in range(config.n_tasks)]


def make_tasks(config: SyntheticConfig) -> np.ndarray:
    """Transition matrices [K, V, V] of the config's tasks, one seed per task."""
    return np.stack([transition_matrix(config.vocab_size, config.alpha, s) for s in task_seeds(config)])


def sample_task_segments(
    n: int, length: int, n_tasks: int, min_segment: int, max_segment: int, rng: np.random.Generator
) -> np.ndarray:
    """Task ids [n, length]: segments of random length in [min_segment, max_segment], each segment's
    task drawn uniformly among the tasks other than the previous segment's (any task for the first)."""
    if not 1 <= min_segment <= max_segment:
        raise ValueError(f"need 1 <= min_segment <= max_segment, got {min_segment}, {max_segment}")
    out = np.empty((n, length), dtype=np.int64)
    for i in range(n):
        pos, prev = 0, -1
        while pos < length:
            seg = int(rng.integers(min_segment, max_segment + 1))
            if n_tasks == 1 or prev < 0:
                task = int(rng.integers(n_tasks))
            else:
                task = int(rng.integers(n_tasks - 1))
                task += task >= prev
            out[i, pos : pos + seg] = task
            pos, prev = pos + seg, task
    return out


def sample_chains(transitions: np.ndarray, tasks: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Tokens [n, T+1] for task ids ``tasks`` [n, T+1]: ``x_0`` uniform, ``x_{t+1} ~ P_{z_t}[x_t]``."""
    n, length = tasks.shape
    vocab = transitions.shape[-1]
    cdf = np.cumsum(transitions, axis=-1)
    tokens = np.empty((n, length), dtype=np.int64)
    tokens[:, 0] = rng.integers(vocab, size=n)
    for t in range(length - 1):
        rows = cdf[tasks[:, t], tokens[:, t]]
        u = rng.random(n)[:, None]
        tokens[:, t + 1] = np.minimum((u > rows).sum(axis=1), vocab - 1)
    return tokens


def token_labels(tokens: np.ndarray, tasks: np.ndarray, vocab_size: int) -> dict[str, np.ndarray]:
    """The three labels [N, T] of every read position ``t < T`` of sequences ``tokens`` [N, T+1]:
    ``task`` = z_t, ``next`` = x_{t+1}, ``pair`` = z_t * V + x_{t+1}."""
    task = tasks[:, :-1]
    nxt = tokens[:, 1:]
    return {"task": task, "next": nxt, "pair": task * vocab_size + nxt}


def _unique_rows(tokens: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of every distinct (tokens, tasks) row, in order."""
    _, first = np.unique(np.concatenate([tokens, tasks], axis=1), axis=0, return_index=True)
    return np.sort(first)


def make_dataset(config: SyntheticConfig) -> SyntheticData:
    """Tasks, then ``n_train`` training and up to ``n_val`` validation sequences, all distinct
    (a validation sequence never occurs in the training set). Deterministic in the config's seeds."""
    transitions = make_tasks(config)
    rng = np.random.default_rng(config.data_seed)
    n = config.n_train + config.n_val
    tasks = sample_task_segments(
        n, config.seq_len + 1, config.n_tasks, config.min_segment, config.max_segment, rng
    )
    tokens = sample_chains(transitions, tasks, rng)
    keep = _unique_rows(tokens, tasks)
    tokens, tasks = tokens[keep], tasks[keep]
    tr, va = slice(0, config.n_train), slice(config.n_train, n)
    return SyntheticData(
        config=config,
        transitions=transitions,
        train=SyntheticSplit(tokens[tr], tasks[tr], config.vocab_size),
        val=SyntheticSplit(tokens[va], tasks[va], config.vocab_size),
    )


def row_entropy(transitions: np.ndarray) -> np.ndarray:
    """Entropy (nats) of every row of transition matrices [..., V, V], shape [..., V]."""
    p = np.asarray(transitions, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return terms.sum(axis=-1)


def stationary_distribution(transition: np.ndarray) -> np.ndarray:
    """Stationary distribution [V] of one transition matrix [V, V] (left eigenvector for eigenvalue 1)."""
    vals, vecs = np.linalg.eig(np.asarray(transition, dtype=np.float64).T)
    v = np.real(vecs[:, np.argmin(np.abs(vals - 1))])
    v = np.abs(v)
    return v / v.sum()


def entropy_rate(transition: np.ndarray) -> float:
    """Entropy rate (nats/token) of a stationary Markov chain: sum_i pi_i H(P[i, :])."""
    return float(stationary_distribution(transition) @ row_entropy(transition))


def oracle_loss(transitions: np.ndarray, split: SyntheticSplit) -> float:
    """Expected cross-entropy (nats) of the predictor that knows the true task, averaged over the
    read positions of ``split``: mean of H(P_{z_t}[x_t, :]). The floor for any model."""
    ent = row_entropy(transitions)
    return float(ent[split.tasks[:, :-1], split.inputs].mean())


def bigram_loss(train: SyntheticSplit, evaluate: SyntheticSplit, smoothing: float = 0.5) -> float:
    """Cross-entropy (nats) on ``evaluate`` of the task-agnostic bigram model estimated on ``train``
    (add-``smoothing`` counts): what a model that does not infer the task in context can reach."""
    v = train.vocab_size
    counts = np.full((v, v), float(smoothing))
    np.add.at(counts, (train.inputs.ravel(), train.targets.ravel()), 1.0)
    probs = counts / counts.sum(axis=1, keepdims=True)
    return float(-np.log(probs[evaluate.inputs, evaluate.targets]).mean())
