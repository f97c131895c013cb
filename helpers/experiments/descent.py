"""Direct test of the meta-learning view (notebook 07): is each layer's update a descent step on the inner loss?

For the current token ``n``, three updates are compared with ``g``, the gradient of the Eq. 14 inner loss with
respect to the state the update starts from: ``block`` ``z^{l+1}_n - z^l_n`` and ``attn`` (attention half-step)
``z_mid - z^l_n`` against ``g(z^l_n)``; ``ffn`` (FFN half-step) ``z^{l+1}_n - z_mid`` against ``g(z_mid)``.
The gradient is :func:`helpers.residual.lens.inner_loss_grad`: each sampled token is its own row, cut right after
it, so the loss at a row's last position is the only loss of the row and the gradient there is exactly
``dL_n / dz_n``. Per (token, layer): cos(dz, -g), descent (``<dz, g> < 0``), whether the step lowers the inner
loss, the same for random directions of the same norm (seeded), and the norms around the half-steps. Half-step
states come from :func:`helpers.residual.hooks.capture_halfsteps`; parallel-residual blocks have none.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch

from helpers import CompendiumError
from helpers.config import DescentProfile, Profile
from helpers.corpus.samples import sample_texts
from helpers.experiments.descent_tables import (
    descent_by_layer,
    descent_by_third,
    layer_thirds,
    norm_attribution,
    norm_by_layer,
    reading,
)
from helpers.experiments.paper import PUBLISHED_GROWTH_GPT2XL
from helpers.experiments.zoo import pair_entries
from helpers.lm.load import LoadedModel
from helpers.paths import CACHE_DIR, config_hash, repo_path
from helpers.report.figures import fig_descent, fig_norm_steps
from helpers.report.output import save_figure, save_table
from helpers.residual.descent_steps import step_records
from helpers.residual.hooks import pad_batch
from helpers.runs.batched import batched_records
from helpers.runs.batching import make_batches

VERSION = 1  # bump when the records change meaning (cache key)


@dataclass(frozen=True)
class TokenSample:
    """Sampled current tokens, one per text: its row (the text's tokens up to and including it) and target."""

    dataset: list[str]
    text: list[int]
    rows: list[list[int]]
    targets: list[int]

    def __len__(self) -> int:
        return len(self.rows)

    def key(self) -> str:
        """Hash of the rows and targets (cache key)."""
        return config_hash({"rows": self.rows, "targets": self.targets})


def sample_tokens(lm: LoadedModel, texts: dict[str, list[str]], max_tokens: int, min_position: int = 4,
                  seed: int = 0) -> TokenSample:
    """One current token per text at a seeded uniform position in ``[min_position, len - 2]`` of the text's first
    ``max_tokens`` tokens (the last kept token is only a target); texts too short for one are skipped."""
    rng = random.Random(seed)
    max_tokens = min(max_tokens, lm.context or max_tokens)
    out: dict[str, list] = {"dataset": [], "text": [], "rows": [], "targets": []}
    for ds, items in texts.items():
        for i, ids in enumerate(lm.encode(items, max_tokens)):
            if len(ids) < min_position + 2:
                continue
            pos = rng.randint(min_position, len(ids) - 2)
            for key, value in (("dataset", ds), ("text", i), ("rows", ids[: pos + 1]), ("targets", ids[pos + 1])):
                out[key].append(value)
    if not out["rows"]:
        raise CompendiumError(f"no text keeps more than {min_position + 1} tokens: raise max_tokens")
    return TokenSample(**out)


def run_descent(lm: LoadedModel, tokens: TokenSample, n_random: int = 8, seed: int = 0, batch_tokens: int = 4096,
                token_budget: int = 8192, cache_dir: str | Path | None = None, weights: str = "trained",
                model: str | None = None, load: Callable[[], LoadedModel] | None = None) -> pd.DataFrame:
    """Descent records of every sampled token at every layer (one row per token and layer), kept batch by batch
    under ``cache_dir/descent`` (:func:`helpers.runs.batched.batched_records`: a killed run resumes) by model
    fingerprint, tokens and settings (no ``cache_dir``: computed, not kept). ``model`` names the model pair (default
    ``lm.label``), ``weights`` says 'trained' or 'untrained twin'. ``lm`` may be a skeleton: ``load`` then gives
    the model with its weights when the records are not cached."""
    config = {"fp": lm.fingerprint, "tokens": tokens.key(), "n_random": n_random, "seed": seed, "v": VERSION,
              "batch_tokens": batch_tokens, "token_budget": token_budget}
    model_lm = lm

    def compute(idx: list[int]) -> dict[str, np.ndarray]:
        nonlocal model_lm
        model_lm = load() if model_lm.skeleton else model_lm  # weights only for a batch that is not cached
        pad = getattr(model_lm.tokenizer, "pad_token_id", None) or 0
        ids, mask = pad_batch([tokens.rows[i] for i in idx], pad, model_lm.input_device)
        tgt = torch.tensor([tokens.targets[i] for i in idx])
        return step_records(model_lm, ids, mask, tgt, n_random, gen, token_budget)

    gen = torch.Generator().manual_seed(seed)
    batches = make_batches([len(r) for r in tokens.rows], batch_tokens=batch_tokens, shortest_first=True)
    root = repo_path(cache_dir) / "descent" if cache_dir else None
    arrays = batched_records(root, config, batches, compute, gen, desc=f"descent {model or lm.label} ({weights})")
    parts = []
    for idx, batch in zip(batches, arrays, strict=True):
        keys = {"dataset": [tokens.dataset[i] for i in idx], "text": [tokens.text[i] for i in idx],
                "position": [len(tokens.rows[i]) - 1 for i in idx]}
        frame = {k: np.repeat(v, lm.n_layers) for k, v in keys.items()}
        frame["layer"] = np.tile(np.arange(lm.n_layers), len(idx))
        parts.append(pd.DataFrame(frame | {k: v.T.reshape(-1) for k, v in batch.items()}))
    df = pd.concat(parts, ignore_index=True).sort_values(["dataset", "text", "layer"], ignore_index=True)
    df.insert(0, "weights", weights)
    df.insert(0, "model", model or lm.label)
    df["third"] = layer_thirds(lm.n_layers)[df["layer"].to_numpy()]
    df["n_layers"] = lm.n_layers
    return df


@dataclass
class DescentRun:
    """Records of every model and its twin (:func:`run_descent` rows), a caption and file tag per model label,
    and the seconds each model took (load, sample, both runs)."""

    records: pd.DataFrame
    captions: dict[str, str]
    tags: dict[str, str]
    timings: pd.DataFrame


def run_models(specs: list[str], texts: dict[str, list[str]], prof: DescentProfile, profile: Profile, seed: int = 0,
               cache_dir: str | Path | None = CACHE_DIR, device: str = "cpu") -> DescentRun:
    """Each model of ``specs`` and its untrained twin on the same sampled tokens (``prof``'s per-model sample
    sizes apply; 0 texts skips a model).
    ``"natural"`` is notebook 06's model; it, and a registry model whose package is missing, are skipped with a
    printed note when unavailable."""

    parts, captions, tags, timings = [], {}, {}, []
    for spec in specs:
        start = time.time()
        n = {ds: prof.texts_for(ds, spec) for ds in texts}
        pair = list(pair_entries(spec, profile, cache_dir, seed, device)) if any(n.values()) else print(
            f"{spec}: no texts")
        if not pair:
            continue
        (trained, twin), lm = pair, pair[0].lm  # skeletons: weights load only for records that are not cached
        tokens = sample_tokens(lm, {ds: sample_texts(t, n[ds], seed) for ds, t in texts.items()}, prof.max_tokens,
                               seed=seed)
        parts.append(run_descent(lm, tokens, prof.n_random, seed, cache_dir=cache_dir, load=trained.with_weights))
        parts.append(run_descent(twin.lm, tokens, prof.n_random, seed, cache_dir=cache_dir,
                                 weights="untrained twin", model=lm.label, load=twin.with_weights))
        tags[lm.label] = spec.replace("/", "_")
        captions[lm.label] = (f"{lm.describe()}; {len(tokens)} tokens (one per text, position >= 5) of "
                              f"{', '.join(texts)}, <= {prof.max_tokens} tokens per text; {prof.n_random} random "
                              f"directions; untrained twin seed {seed}; profile {profile.name}")
        timings.append({"model": lm.label, "tokens": len(tokens), "seconds": round(time.time() - start, 1)})
        del lm, trained, twin, pair
        gc.collect()
    if not parts:
        raise CompendiumError(f"none of the models {specs} is available: see the notes above")
    return DescentRun(pd.concat(parts, ignore_index=True), captions, tags, pd.DataFrame(timings))


def _suffix(profile: str) -> str:
    return "" if profile == "default" else f"_{profile}"  # file names say the profile


def report_descent(run: DescentRun, profile: str, figures_dir: str, results_dir: str
                   ) -> tuple[list[go.Figure], pd.DataFrame]:
    """The descent tables by layer third and by layer (``07_descent_thirds``, ``07_descent_by_layer``) and one
    figure per model (``07_descent_<model>``); returns the figures and the table by third."""
    sfx, caption = _suffix(profile), " | ".join(run.captions.values())
    thirds, by_layer = descent_by_third(run.records), descent_by_layer(run.records)
    save_table(thirds.round(3), f"07_descent_thirds{sfx}", results_dir, caption=f"Descent test by layer third. {caption}")
    save_table(by_layer.round(4), f"07_descent_by_layer{sfx}", results_dir, caption=f"Descent test per layer. {caption}")
    figs = []
    for model, cap in run.captions.items():
        figs.append(fig_descent(by_layer, model, cap))
        save_figure(figs[-1], f"07_descent_{run.tags[model]}{sfx}", figures_dir, png=profile != "smoke")
    return figs, thirds


def report_norms(run: DescentRun, profile: str, figures_dir: str, results_dir: str
                 ) -> tuple[list[go.Figure], pd.DataFrame]:
    """Norms around the half-steps per layer (``07_norm_by_layer``), which half-step decreases the norm
    (``07_norm_attribution``, returned) and one figure per model (``07_norms_<model>``)."""
    sfx, caption = _suffix(profile), " | ".join(run.captions.values())
    norms, attribution = norm_by_layer(run.records), norm_attribution(run.records)
    save_table(norms.round(4), f"07_norm_by_layer{sfx}", results_dir, caption=f"Norms per half-step. {caption}")
    save_table(attribution.round(3), f"07_norm_attribution{sfx}", results_dir,
               caption=f"Which half-step decreases the norm, blocks 0..L-2; growth rate per layer beside GPT2-XL's "
                       f"published ~{PUBLISHED_GROWTH_GPT2XL}. {caption}")
    figs = []
    for model, cap in run.captions.items():
        figs.append(fig_norm_steps(norms, model, cap, PUBLISHED_GROWTH_GPT2XL))
        save_figure(figs[-1], f"07_norms_{run.tags[model]}{sfx}", figures_dir, png=profile != "smoke")
    return figs, attribution


def reading_of(run: DescentRun) -> str:
    """The notebook's reading (:func:`helpers.experiments.descent_tables.reading`) of ``run``."""
    return reading(descent_by_third(run.records), norm_attribution(run.records))
