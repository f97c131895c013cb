"""The powered, two-sided descent test, the line search and the ablation (notebook 07, part 2).

For sampled current tokens (several per WikiText-103 text at positions >= ``min_context``, one per 1BW
sentence), at every layer and for every update (``block``, ``attn``, ``ffn``) the records of
:func:`helpers.residual.descent_records.batch_records`: three slopes (``inner`` Eq. 14 and ``true`` the rest of
the network, both at the step's start; ``true_end`` at its end, a step-size test), and on a subset stratified by
corpus (:func:`line_subset`, one token per text) the controls, the line search read two ways and the ablation of
the gradient component. Every token's context stays the clean pass's: only the current token's state varies, one
query per variant. This module samples the tokens, batches and caches them and runs each model beside its twin.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from helpers import CompendiumError
from helpers.config import PoweredDescentProfile, Profile
from helpers.corpus.samples import sample_texts
from helpers.experiments.descent_tables import layer_thirds
from helpers.experiments.zoo import pair_entries
from helpers.lm.load import LoadedModel, free_memory
from helpers.paths import CACHE_DIR, config_hash, repo_path
from helpers.residual.descent_records import batch_records
from helpers.runs.batched import batched_records
from helpers.runs.batching import make_batches

VERSION = 3  # bump when the records change meaning (cache key)
KEYS = ["dataset", "text", "position", "layer"]  # one record per token and layer


@dataclass(frozen=True)
class PositionSample:
    """Texts as token rows and the current tokens' positions in each (several per text where it is long)."""

    dataset: list[str]
    text: list[int]
    rows: list[list[int]]
    positions: list[list[int]]
    min_context: int = 0  # the context asked of a long text, as applied (halved for a short-context model)

    def __len__(self) -> int:
        return sum(len(p) for p in self.positions)

    def key(self) -> str:
        """Hash of the rows and positions (cache key)."""
        return config_hash({"rows": self.rows, "positions": self.positions})


def sample_positions(lm: LoadedModel, texts: dict[str, list[str]], max_tokens: int, per_text: int,
                     min_context: int, seed: int = 0) -> PositionSample:
    """Up to ``per_text`` current tokens per text at seeded distinct positions in ``[min_context, len - 2]`` of its
    first ``max_tokens`` tokens (the last kept token is only a target; ``min_context`` at most half the model's
    window); a text too short for that context gives one token in ``[4, len - 2]`` (1BW's sentences: the context
    is what the text allows); shorter texts are skipped."""
    rng = random.Random(seed)
    if lm.context and lm.context < 2 * min_context + 4:
        min_context = lm.context // 2  # a short-context model: the second half of its window
    max_tokens = min(max_tokens, lm.context or max_tokens)
    out: dict[str, list] = {"dataset": [], "text": [], "rows": [], "positions": []}
    for ds, items in texts.items():
        for i, ids in enumerate(lm.encode(items, max_tokens) if items else []):
            if len(ids) < 6:
                continue
            lo = min_context if len(ids) >= min_context + 2 else 4
            span = range(lo, len(ids) - 1)
            pos = sorted(rng.sample(span, min(per_text if lo == min_context else 1, len(span))))
            for key, value in (("dataset", ds), ("text", i), ("rows", ids[: pos[-1] + 2]), ("positions", pos)):
                out[key].append(value)
    if not out["rows"]:
        raise CompendiumError("no text keeps 6 tokens: raise max_tokens")
    return PositionSample(**out, min_context=min_context)


def token_seeds(sample: PositionSample, seed: int = 0) -> list[list[int]]:
    """The seed of every current token's random draws (wrong target, random ablation directions), from the run's
    ``seed`` and the token's corpus, text and position: the same in any batch, for the model and its twin."""
    def one(ds: str, text: int, pos: int) -> int:
        return int(hashlib.sha256(f"{seed}|{ds}|{text}|{pos}".encode()).hexdigest()[:15], 16)
    return [[one(ds, t, p) for p in pos] for ds, t, pos in zip(sample.dataset, sample.text, sample.positions,
                                                             strict=True)]


def line_subset(sample: PositionSample, line_texts: int, seed: int = 0) -> list[list[bool]]:
    """Per text, which of its current tokens join the subset (start-of-step slope, controls, line search,
    ablation): one seeded token from each of the first ``line_texts`` texts of every corpus (the texts are a
    seeded sample already), so the subset is stratified by corpus and has one token per text cluster."""
    rng = random.Random(seed + 1)
    seen: dict[str, int] = {}
    out = []
    for ds, pos in zip(sample.dataset, sample.positions, strict=True):
        pick = rng.randrange(len(pos)) if seen.get(ds, 0) < line_texts else -1
        seen[ds] = seen.get(ds, 0) + 1
        out.append([i == pick for i in range(len(pos))])
    return out


def sample_caption(model: str, sample: PositionSample, per_text: int, line_texts: int, seed: int,
                   profile: str, line_stride: int = 1) -> str:
    """The provenance caption of one model's tokens: the positions as the sample applied them (a model whose
    window is shorter than twice the profile's context gets the second half of its window) and the subset."""
    n_line = sum(map(any, line_subset(sample, line_texts, seed)))
    layers = {1: "every layer", 2: "every other layer and the last"}.get(
        line_stride, f"every {line_stride}th layer and the last")
    return " | ".join([
        model, f"{len(sample)} tokens of {len(sample.rows)} texts: WikiText-103 up to {per_text} per text at "
        f"positions >= {sample.min_context}, 1BW one per sentence",
        f"start-of-step slope, controls, line search and ablation on {n_line} tokens (one per text, up to "
        f"{line_texts} texts per corpus), {layers}", f"untrained twin seed {seed} (slopes and reading (a)), "
        f"profile {profile}"])


def _frame(lm: LoadedModel, sample: PositionSample, idx: list[int], line: list[list[bool]],
           arrays: dict[str, np.ndarray]) -> pd.DataFrame:
    """One row per (token, layer) of the batch ``idx``: where the token is, then the ``[L, N]`` arrays."""
    meta = {"dataset": [sample.dataset[i] for i in idx for _ in sample.positions[i]],
            "text": [sample.text[i] for i in idx for _ in sample.positions[i]],
            "position": [p for i in idx for p in sample.positions[i]],
            "line": [f for i in idx for f in line[i]]}
    frame = {k: np.repeat(v, lm.n_layers) for k, v in meta.items()}
    frame["layer"] = np.tile(np.arange(lm.n_layers), len(meta["text"]))
    return pd.DataFrame(frame | {k: v.T.reshape(-1) for k, v in arrays.items()})


def run_powered(lm: LoadedModel, sample: PositionSample, line_texts: int, alphas: tuple[float, ...], seed: int = 0,
                batch_tokens: int = 2048, cache_dir: str | None = None, weights: str = "trained",
                model: str | None = None, line_stride: int = 1,
                load: Callable[[], LoadedModel] | None = None) -> pd.DataFrame:
    """Records of every sampled token at every layer (one row per token and layer), kept batch by batch under
    ``cache_dir/descent_slopes`` (:func:`helpers.runs.batched.batched_records`: a killed run resumes) by model
    fingerprint, sample and settings (no ``cache_dir``: computed, not kept). ``batch_tokens`` bounds a batch's
    padded tokens, so memory, and nothing else: each token's random draws are its own (:func:`token_seeds`).
    The tokens of :func:`line_subset` get, at every ``line_stride``-th layer, the start-of-step slope, the
    controls, the line search and the ablation (the untrained twin: the slope and the predictor's readings,
    :func:`helpers.residual.descent_records.batch_records` with ``full`` False). ``lm`` may be a skeleton: ``load``
    then gives the model with its weights when the records are not cached."""
    full = weights == "trained"
    config = {"fp": lm.fingerprint, "sample": sample.key(), "line_texts": line_texts, "alphas": list(alphas),
              "seed": seed, "v": VERSION, "stride": line_stride, "full": full, "batch_tokens": batch_tokens}
    line, seeds = line_subset(sample, line_texts, seed), token_seeds(sample, seed)
    label = f"{model or lm.label} ({weights})"
    model_lm = lm

    def compute(idx: list[int]) -> dict[str, np.ndarray]:
        nonlocal model_lm
        model_lm = load() if model_lm.skeleton else model_lm  # weights only for a batch that is not cached
        arrays = batch_records(model_lm, [sample.rows[i] for i in idx], [sample.positions[i] for i in idx],
                               [line[i] for i in idx], alphas, [seeds[i] for i in idx], line_stride, full)
        free_memory()  # the batch's states and keys are gone: return their pages before the next batch
        return arrays

    batches = make_batches([len(r) for r in sample.rows], batch_tokens=batch_tokens, shortest_first=True)
    root = repo_path(cache_dir) / "descent_slopes" if cache_dir else None
    parts = batched_records(root, config, batches, compute, desc=f"descent {label}")
    df = pd.concat([_frame(lm, sample, idx, line, arrays) for idx, arrays in zip(batches, parts, strict=True)],
                   ignore_index=True).sort_values(KEYS, ignore_index=True)
    df = df.copy()  # one block per dtype: the columns below do not fragment a frame of ~200 columns
    df.insert(0, "weights", weights)
    df.insert(0, "model", model or lm.label)
    thirds = layer_thirds(lm.n_layers - 1).tolist() + ["predictor"]  # layer L-1 is the predictor itself
    df["third"] = np.asarray(thirds, dtype=object)[df["layer"].to_numpy()]
    df["n_layers"] = lm.n_layers
    df["cluster"] = df["dataset"] + ":" + df["text"].astype(str)
    return df


@dataclass
class PoweredRun:
    """Records of every model and its twin, a caption and file tag per model label, seconds per model."""

    records: pd.DataFrame
    captions: dict[str, str]
    tags: dict[str, str]
    timings: pd.DataFrame


def run_models(specs: list[str], texts: dict[str, list[str]], prof: PoweredDescentProfile, profile: Profile,
               seed: int = 0, cache_dir: str | None = CACHE_DIR, device: str = "cpu") -> PoweredRun:
    """Each model of ``specs`` and its untrained twin on the same tokens (``prof``'s per-model sample sizes;
    unavailable models are skipped with a printed note, as in :func:`helpers.experiments.zoo.load_or_skip`)."""
    parts, captions, tags, timings = [], {}, {}, []
    for spec in specs:
        start = time.time()
        size = prof.sample_for(spec)
        pair = list(pair_entries(spec, profile, cache_dir, seed, device)) if size.tokens else print(f"{spec}: no tokens")
        if not pair:
            continue
        (trained, twin), lm = pair, pair[0].lm  # skeletons: weights load only for records that are not cached
        picked = {"wikitext-103": sample_texts(texts["wikitext-103"], size.wikitext_texts, seed),
                  "1bw": sample_texts(texts["1bw"], size.onebw_texts, seed)} if size.tokens else {}
        sample = sample_positions(lm, picked, prof.max_tokens, prof.per_text, prof.min_context, seed)
        parts.append(run_powered(lm, sample, size.line_texts, prof.alphas, seed, prof.batch_tokens, cache_dir,
                                 line_stride=size.line_stride, load=trained.with_weights))
        # the twin's weights are built only if its records are not cached (the model's freed first)
        parts.append(run_powered(twin.lm, sample, size.line_texts, prof.alphas, seed, prof.batch_tokens, cache_dir,
                                 weights="untrained twin", model=lm.label, line_stride=size.line_stride,
                                 load=twin.with_weights))
        n_ctx = [x for p in sample.positions for x in p]
        tags[lm.label] = spec.replace("/", "_")
        captions[lm.label] = sample_caption(lm.describe(), sample, prof.per_text, size.line_texts, seed, profile.name,
                                            size.line_stride)
        n_line = sum(map(any, line_subset(sample, size.line_texts, seed)))
        timings.append({"model": lm.label, "tokens": len(sample), "line_tokens": n_line,
                        "texts": len(sample.rows), "median_position": float(np.median(n_ctx)),
                        "seconds": round(time.time() - start, 1)})
        del lm, trained, twin, pair
        free_memory()
    if not parts:
        raise CompendiumError(f"none of the models {specs} is available: see the notes above")
    return PoweredRun(pd.concat(parts, ignore_index=True), captions, tags, pd.DataFrame(timings))
