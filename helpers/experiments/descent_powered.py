"""The powered, two-sided descent test and the line search (notebook 07, part 2).

For sampled current tokens ``n`` (several per WikiText-103 text at positions >= ``min_context``, one per 1BW
sentence), at every layer ``l`` and for every update (``block`` ``z^{l+1} - z^l``, ``attn`` ``z_mid - z^l``,
``ffn`` ``z^{l+1} - z_mid``) this records:

- two gradients at the update's starting state: ``inner``, the paper's Eq. 14 loss (last block + final norm +
  LM head, prefix held fixed; :func:`helpers.residual.splice.predictor_losses`), and ``true``, the model's own
  next-token loss through the rest of the real network (:func:`helpers.residual.splice.path_grads`); per pair
  cos(dz, -g) and whether ``<dz, g> < 0`` (descent); and cos(g_inner, g_true);
- controls on a subset (``line``): both gradients for a random wrong target and for the model's own final
  prediction (argmax), which separate "descends the language-modelling loss" from "moves toward the output";
- the line search on the same subset: the update scaled by alpha, read (a) with the Eq. 14 predictor on
  ``start + alpha dz`` (block, attn, ffn) and (b) as the final loss after the rest of the network with the
  context's keys and values unchanged (:func:`helpers.residual.splice.continuation_losses`; block and FFN updates
  enter the next block as ``start + alpha dz``, the attention update is scaled inside its own block, where the
  rest of that block, the FFN, then sees it).

Every token's context stays the clean pass's: only the current token's state varies, one query per variant. The
tensor work of one batch is :mod:`helpers.residual.descent_records`; this module samples the tokens, batches and
caches them and runs each model beside its twin.
"""

from __future__ import annotations

import gc
import random
import time
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm  # text bars: they stream through papermill

from helpers import CompendiumError
from helpers.config import PoweredDescentProfile
from helpers.corpus.samples import sample_texts
from helpers.experiments.descent_tables import layer_thirds
from helpers.experiments.zoo import load_or_skip
from helpers.lm.families import halfstep_module
from helpers.lm.load import LoadedModel
from helpers.lm.twin import untrained_twin
from helpers.paths import CACHE_DIR, atomic_write_text, config_hash, repo_path
from helpers.residual.descent_records import batch_records, halfstep_continuations

VERSION = 1  # bump when the records change meaning (cache key)
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


def sample_caption(model: str, sample: PositionSample, per_text: int, line_tokens: int, seed: int,
                   profile: str) -> str:
    """The provenance caption of one model's tokens: the positions as the sample applied them (a model whose
    window is shorter than twice the profile's context gets the second half of its window)."""
    return " | ".join([
        model, f"{len(sample)} tokens of {len(sample.rows)} texts: WikiText-103 up to {per_text} per text at "
        f"positions >= {sample.min_context}, 1BW one per sentence",
        f"controls and line search on {min(line_tokens, len(sample))} tokens",
        f"untrained twin seed {seed}, profile {profile}"])


def _batches(sample: PositionSample, batch_tokens: int) -> list[list[int]]:
    """Row indices of ``sample`` in batches of at most ``batch_tokens`` padded tokens (rows sorted by length)."""
    order = sorted(range(len(sample.rows)), key=lambda i: len(sample.rows[i]))
    out, s = [], 0
    while s < len(order):
        e = s + 1
        while e < len(order) and (e - s + 1) * len(sample.rows[order[e]]) <= batch_tokens:
            e += 1
        out.append(order[s:e])
        s = e
    return out


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


def run_powered(lm: LoadedModel, sample: PositionSample, line_tokens: int, alphas: tuple[float, ...], seed: int = 0,
                batch_tokens: int = 4096, cache_dir: str | None = None, weights: str = "trained",
                model: str | None = None) -> pd.DataFrame:
    """Records of every sampled token at every layer (one row per token and layer), cached under
    ``cache_dir/descent_powered`` by model fingerprint, sample and settings. The first ``line_tokens`` tokens
    (in sample order) get the controls and the line search. Records cached before line search (b) covered the
    half-steps get those columns added (:func:`halfstep_continuations`) and are written back."""
    key = config_hash({"fp": lm.fingerprint, "sample": sample.key(), "line": line_tokens, "alphas": list(alphas),
                       "seed": seed, "v": VERSION})
    path = repo_path(cache_dir) / "descent_powered" / f"{key}.csv" if cache_dir else None
    count, line = 0, []
    for pos in sample.positions:
        line.append([count + i < line_tokens for i in range(len(pos))])
        count += len(pos)
    batches = _batches(sample, batch_tokens)
    label = f"{model or lm.label} ({weights})"
    df = pd.read_csv(path) if path is not None and path.is_file() else None
    halfsteps = halfstep_module(lm.family, lm.model.config) is not None
    if df is None:
        gen = torch.Generator().manual_seed(seed)
        parts = []
        for idx in tqdm(batches, unit="batch", desc=f"descent {label}"):
            arrays = batch_records(lm, [sample.rows[i] for i in idx], [sample.positions[i] for i in idx],
                                   [line[i] for i in idx], alphas, gen)
            parts.append(_frame(lm, sample, idx, line, arrays))
        df = pd.concat(parts, ignore_index=True).sort_values(KEYS, ignore_index=True)
    elif halfsteps and line_tokens and f"b_attn_{alphas[0]:g}" not in df:
        parts = []
        for idx in tqdm([b for b in batches if any(any(line[i]) for i in b)], unit="batch",
                        desc=f"line search (b), half-steps {label}"):
            arrays = halfstep_continuations(lm, [sample.rows[i] for i in idx], [sample.positions[i] for i in idx],
                                            [line[i] for i in idx], alphas)
            parts.append(_frame(lm, sample, idx, line, arrays).drop(columns="line"))
        df = df.merge(pd.concat(parts, ignore_index=True), on=KEYS, how="left")
    else:
        path = None  # cached and complete: nothing to write
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, df.to_csv(index=False, float_format="%.7g"))
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


def run_models(specs: list[str], texts: dict[str, list[str]], prof: PoweredDescentProfile, profile: str,
               seed: int = 0, cache_dir: str | None = CACHE_DIR, device: str = "cpu") -> PoweredRun:
    """Each model of ``specs`` and its untrained twin on the same tokens (``prof``'s per-model sample sizes;
    unavailable models are skipped with a printed note, as in :func:`helpers.experiments.zoo.load_or_skip`)."""
    parts, captions, tags, timings = [], {}, {}, []
    for spec in specs:
        start = time.time()
        size = prof.sample_for(spec)
        lm = load_or_skip(spec, profile, cache_dir, seed, device) if size.tokens else print(f"{spec}: no tokens")
        if lm is None:
            continue
        picked = {"wikitext-103": sample_texts(texts["wikitext-103"], size.wikitext_texts, seed),
                  "1bw": sample_texts(texts["1bw"], size.onebw_texts, seed)} if size.tokens else {}
        sample = sample_positions(lm, picked, prof.max_tokens, prof.per_text, prof.min_context, seed)
        parts.append(run_powered(lm, sample, size.line_tokens, prof.alphas, seed, cache_dir=cache_dir))
        twin = untrained_twin(lm, seed, release=True)  # the model's weights freed first: one model in memory
        parts.append(run_powered(twin, sample, size.line_tokens, prof.alphas, seed, cache_dir=cache_dir,
                                 weights="untrained twin", model=lm.label))
        n_ctx = [x for p in sample.positions for x in p]
        tags[lm.label] = spec.replace("/", "_")
        captions[lm.label] = sample_caption(lm.describe(), sample, prof.per_text, size.line_tokens, seed, profile)
        timings.append({"model": lm.label, "tokens": len(sample), "line_tokens": min(size.line_tokens, len(sample)),
                        "texts": len(sample.rows), "median_position": float(np.median(n_ctx)),
                        "seconds": round(time.time() - start, 1)})
        del lm, twin
        gc.collect()
    if not parts:
        raise CompendiumError(f"none of the models {specs} is available: see the notes above")
    return PoweredRun(pd.concat(parts, ignore_index=True), captions, tags, pd.DataFrame(timings))
