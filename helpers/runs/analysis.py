"""Streamed, cached, resumable analysis of a list of texts: per-token records, never a corpus of states.

``run_analysis`` tokenises the texts, splits them into chunks of similar length, and for each chunk runs
:func:`helpers.residual.records.analyse_batch` over token-budget batches, keeping only per-token scalars (norms,
inner loss, logit lens) and, for the first ``n_vectors`` texts, the last token's vectors at every layer (for the
PCA figures). Each chunk is saved as it finishes; a killed run resumes from its last complete chunk, and
``shard="i/n"`` runs a disjoint slice merged by :func:`merge_records`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
from tqdm import tqdm  # text bars: they stream through papermill and need no ipywidgets

from helpers import CompendiumError
from helpers.checks import check_shard
from helpers.corpus.samples import fingerprint_texts
from helpers.lm.load import LoadedModel
from helpers.paths import CACHE_DIR
from helpers.residual.records import analyse_batch
from helpers.runs.batching import make_batches, padding_share
from helpers.runs.store import RunStore

# Bump when the records' meaning changes, to invalidate caches. 2: the lens re-runs the last block with every
# bound argument (GPT-2's mask); 3: lenses on the selected tokens only (lens_share), token-budget batches;
# 4: chunks hold texts of similar length (a chunk's texts changed: old partial runs must not be resumed).
CODE_VERSION = 4


@dataclass(frozen=True)
class AnalysisConfig:
    """What determines the numbers (batch size and device do not: batched equals unbatched)."""

    max_tokens: int = 128
    min_position: int = 4
    lens: bool = True
    logit_lens: bool = True
    n_vectors: int = 150
    chunk_texts: int = 32
    lens_share: float | None = 0.1
    lens_seed: int = 0
    filter_share: float | None = None  # of the tokens passing the paper's filter, the seeded share that gets the lens

    def key(self) -> dict:
        """The fields that name a cached run: every field, except ``filter_share`` while it is off (None), so the
        runs cached before it existed keep their keys."""
        out = asdict(self)
        if out["filter_share"] is None:
            del out["filter_share"]
        return out

    def validate(self) -> AnalysisConfig:
        """Raise a one-line error for out-of-range values."""
        for name in ("max_tokens", "chunk_texts"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise CompendiumError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.min_position, int) or not 0 <= self.min_position < self.max_tokens - 1:
            raise CompendiumError(
                f"min_position must be an integer in [0, max_tokens - 2], got {self.min_position!r}"
            )
        if not isinstance(self.n_vectors, int) or self.n_vectors < 0:
            raise CompendiumError(f"n_vectors must be a non-negative integer, got {self.n_vectors!r}")
        for name in ("lens_share", "filter_share"):
            share = getattr(self, name)
            if share is not None and (isinstance(share, bool) or not isinstance(share, int | float)
                                      or not 0 <= share <= 1):
                raise CompendiumError(f"{name} must be a number in [0, 1] or None (every token), got {share!r}")
        return self

    def lens_tokens(self) -> str:
        """Which tokens the lens panels cover, for captions."""
        filtered = ("tokens with final loss <= 1" if self.filter_share is None else
                    f"a seeded {100 * self.filter_share:g}% of the tokens with final loss <= 1")
        which = ("every token" if self.lens_share is None else
                 f"{filtered} and a seeded random {100 * self.lens_share:g}% of all tokens (the 'all tokens' panel)")
        return which if self.logit_lens else which + "; logit lens not computed"


def parse_shard(shard: str | tuple[int, int] | None) -> tuple[int, int]:
    """``"i/n"`` or ``(i, n)`` -> ``(i, n)`` with 0 <= i < n (:func:`helpers.checks.check_shard`); None -> (0, 1)."""
    return check_shard(shard) or (0, 1)


def run_analysis(
    lm: LoadedModel,
    texts: list[str],
    config: AnalysisConfig,
    cache_dir: str = CACHE_DIR,
    dataset: str = "custom",
    batch_size: int | None = None,
    shard: str | tuple[int, int] | None = None,
    progress: bool = True,
    token_budget: int = 8192,
    cached_only: bool = False,
    batch_tokens: int | None = 4096,
) -> tuple[dict[str, np.ndarray], RunStore]:
    """Analyse ``texts`` with ``lm``; return concatenated per-token records and the run's store.

    Records (see :func:`helpers.residual.records.analyse_batch`) gain ``text_id`` (index into ``texts``);
    ``last_vectors`` [n, L+1, D] and ``vector_text_id`` hold the last-token vectors of the first
    ``n_vectors`` texts. Texts too short to have a token at ``min_position`` are skipped and counted.
    ``cached_only`` reads a finished run and computes nothing: :class:`CompendiumError` if it is not finished.
    Batches hold at most ``batch_tokens`` padded tokens and ``batch_size`` rows (:func:`make_batches`);
    ``token_budget`` is the size of one stacked last-block call of the lens.
    """
    config.validate()
    if not texts:
        raise CompendiumError(f"no texts to analyse ({dataset}): the list of texts is empty; check the data file "
                              f"and the filters")
    i_shard, n_shard = parse_shard(shard)
    key = {
        "model": lm.name,
        "model_fingerprint": lm.fingerprint,
        "dtype": str(lm.dtype),
        "dataset": dataset,
        "data_fingerprint": fingerprint_texts(texts),
        "n_texts": len(texts),
        "shard": f"{i_shard}/{n_shard}",
        "code_version": CODE_VERSION,
        **config.key(),
    }
    store = RunStore(f"{cache_dir}/analysis", key, create=False)
    if cached_only and not store.manifest().get("complete"):
        raise NotFinished(f"shard {i_shard}/{n_shard} has not finished (no complete run in {store.dir})")
    ids = [i for i in range(len(texts)) if i % n_shard == i_shard]
    if not ids:
        raise CompendiumError(f"shard {i_shard}/{n_shard} of {dataset} is empty: the sample has {len(texts)} texts; "
                              f"use at most {len(texts)} shards")
    rows_all = lm.encode([texts[i] for i in ids], config.max_tokens)
    check_rows(rows_all, config, dataset, lm.name)
    plan = plan_chunks(ids, rows_all, config, batch_size, batch_tokens)
    if cached_only and not all(store.has_chunk(c) for c in range(len(plan.chunks))):
        raise NotFinished(f"shard {i_shard}/{n_shard} has missing or unreadable chunks in {store.dir}")
    store.dir.mkdir(parents=True, exist_ok=True)  # only now: every check above writes nothing
    finished = bool(store.manifest().get("complete"))
    if not finished:  # a rerun of a finished run never marks it incomplete
        store.write_manifest(complete=False, n_chunks=len(plan.chunks), skipped_short=plan.skipped, model=lm.describe())
    bar = tqdm(total=plan.n_tokens, unit="tok", desc=f"{dataset} {lm.label}", disable=not progress)
    for c, chunk in enumerate(plan.chunks):
        if not store.has_chunk(c):
            store.save_chunk(c, analyse_chunk(lm, chunk, plan.batches[c], config, token_budget, bar.update))
        else:
            bar.update(sum(len(r) for _, r in chunk))
    bar.close()
    records = sort_records(store.load_chunks(len(plan.chunks)))
    if not finished:
        store.write_manifest(complete=True, n_chunks=len(plan.chunks), skipped_short=plan.skipped,
                             padding_share=plan.padding, n_tokens=int(len(records["text_id"])), model=lm.describe())
    return records, store


@dataclass
class ChunkPlan:
    """Texts of one run in chunks of similar length (longest first), each chunk's batches (indices into the
    chunk), how many texts were too short, the padding share of the batches and the token count."""

    chunks: list[list[tuple[int, list[int]]]]
    batches: list[list[list[int]]]
    skipped: int
    padding: float
    n_tokens: int


def plan_chunks(ids: list[int], rows: list[list[int]], config: AnalysisConfig, batch_size: int | None,
                batch_tokens: int | None) -> ChunkPlan:
    """Chunks of ``config.chunk_texts`` texts of similar lengths (longest first), so batches inside a chunk carry
    little padding (on whole texts, chunks in text order padded 34% of WikiText-103 and 58% of 1BW positions)."""
    usable = [(i, r) for i, r in zip(ids, rows, strict=True) if len(r) >= config.min_position + 1]
    usable.sort(key=lambda item: (-len(item[1]), item[0]))
    chunks = [usable[s : s + config.chunk_texts] for s in range(0, len(usable), config.chunk_texts)]
    plans = [make_batches([len(r) for _, r in chunk], batch_size, batch_tokens) for chunk in chunks]
    lengths = [len(r) for chunk in chunks for _, r in chunk]
    offsets = np.cumsum([0] + [len(chunk) for chunk in chunks])
    padding = padding_share(lengths, [[int(offsets[c]) + i for i in b] for c, plan in enumerate(plans) for b in plan])
    return ChunkPlan(chunks, plans, len(ids) - len(usable), padding, sum(lengths))


def analyse_chunk(lm: LoadedModel, chunk: list[tuple[int, list[int]]], batches: list[list[int]],
                  config: AnalysisConfig, token_budget: int, advance: Callable[[int], object]) -> dict[str, np.ndarray]:
    """The records of one chunk of (text id, token row) pairs, batch by batch; ``advance(n)`` after each batch."""
    parts = []
    for batch in batches:
        text_ids = [chunk[j][0] for j in batch]
        rec = analyse_batch(
            lm,
            [chunk[j][1] for j in batch],
            min_position=config.min_position,
            lens=config.lens,
            logit_lens=config.logit_lens,
            keep_last_vectors=any(t < config.n_vectors for t in text_ids),
            token_budget=token_budget,
            lens_share=config.lens_share,
            filter_share=config.filter_share,
            keys=text_ids,
            seed=config.lens_seed,
        )
        rec["text_id"] = np.asarray(text_ids, dtype=np.int32)[rec.pop("sample")]
        if "last_vectors" in rec:
            keep = np.asarray([t < config.n_vectors for t in text_ids])
            rec["vector_text_id"] = np.asarray(text_ids, dtype=np.int32)[keep]
            rec["last_vectors"] = rec["last_vectors"][keep]
        parts.append(rec)
        advance(sum(len(chunk[j][1]) for j in batch))
    return {k: np.concatenate([p[k] for p in parts]) for k in _TOKEN_KEYS if k in parts[0]} | _vectors(parts)


def check_rows(rows: list[list[int]], config: AnalysisConfig, dataset: str, model: str) -> None:
    """One-line errors when tokenisation leaves nothing to analyse (before anything is written)."""
    if rows and not any(rows):
        raise CompendiumError(f"the tokenizer of '{model}' turns every text of {dataset} into no tokens: save the "
                              f"tokenizer files with the model (tokenizer.save_pretrained)")
    if rows and max(len(r) for r in rows) < config.min_position + 1:
        raise CompendiumError(
            f"every text of {dataset} is shorter than min_position + 1 = {config.min_position + 1} tokens (the "
            f"longest has {max(len(r) for r in rows)} of at most max_tokens={config.max_tokens}): lower min_position "
            f"(--min-position) or raise max_tokens (--max-tokens)"
        )


class NotFinished(CompendiumError):
    """A run (or shard) asked for with ``cached_only`` has not finished."""


def _vectors(parts: list[dict]) -> dict[str, np.ndarray]:
    with_vec = [p for p in parts if "last_vectors" in p]
    if not with_vec:
        return {}
    return {
        "last_vectors": np.concatenate([p["last_vectors"] for p in with_vec]),
        "vector_text_id": np.concatenate([p["vector_text_id"] for p in with_vec]),
    }


_TOKEN_KEYS = ("text_id", "position", "token", "target", "norms", "inner_loss", "logit_lens", "final_loss", "lens_sampled",
               "lens_filtered")


def sort_records(records: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Order per-token records by (text_id, position) and vectors by text id: a canonical form."""
    out = dict(records)
    order = np.lexsort((records["position"], records["text_id"]))
    for k in _TOKEN_KEYS:
        if k in out:
            out[k] = out[k][order]
    if "vector_text_id" in out:
        v = np.argsort(out["vector_text_id"], kind="stable")
        out["vector_text_id"] = out["vector_text_id"][v]
        out["last_vectors"] = out["last_vectors"][v]
    return out


def merge_records(shards: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Combine the records of disjoint shards into what a single run gives."""
    keys = set().union(*(s.keys() for s in shards))
    return sort_records({k: np.concatenate([s[k] for s in shards if k in s]) for k in keys})
