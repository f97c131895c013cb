"""The eigenvalue check of notebook 05: every construction on every block and sample, against the real block.

:func:`eigen_records` evaluates one model on token ids; :func:`run_eigen_check` runs every model on
every dataset (the notebook's main loop) and :func:`option_ablation` undoes the paper's omissions one
at a time (:data:`helpers.surrogates.constructions.OPTION_VARIANTS`). With a ``cache_dir`` each model's rows
and spectra are kept in the run store (:func:`cached_records`), so a rerun computes nothing. Tables and the
notebook's reading text are built from their rows by :mod:`helpers.surrogates.report`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm  # text bars: they stream through papermill and need no ipywidgets

from helpers import CompendiumError
from helpers.config import PROFILES, EigenProfile
from helpers.lm.load import LoadedModel
from helpers.paths import atomic_path, config_hash
from helpers.runs.store import RunStore
from helpers.surrogates.algebra import compare, evaluate_map
from helpers.surrogates.constructions import (
    CONSTRUCTIONS,
    OPTION_VARIANTS,
    PAPER_OPTIONS,
    SurrogateOptions,
    block_surrogates,
)
from helpers.surrogates.record import capture_sample


def profile_layers(n_layers: int, stride: int) -> list[int]:
    """Every ``stride``-th block index, the last block always included."""
    return sorted(set(range(0, n_layers, max(1, stride))) | {n_layers - 1})


def eigen_records(lm: LoadedModel, samples: Sequence[Sequence[int]], constructions: Sequence[str] = CONSTRUCTIONS,
                  options: SurrogateOptions = PAPER_OPTIONS, spectra_samples: int = 1,
                  layers: Sequence[int] | None = None, progress: bool = False) -> tuple[list[dict], dict]:
    """Evaluate every applicable construction on every block and sample (one current token per sample).

    Returns ``(rows, spectra)``: one row per (sample, layer, construction) with ``prop1`` / ``direct``
    verdicts (+1 / 0 / -1), ``meets`` (Proposition 1's condition ``lhs >= rhs``, ties included),
    ``ratio`` (surrogate ``||W x|| / ||x||``), ``real_ratio`` (``||z^(l+1)_n|| / ||z^l_n||`` of the real
    block) and ``agrees`` (the surrogate's verdict equals the real block's grow / shrink); ``spectra``
    maps ``(sample, layer, construction)`` to the eigenvalues of ``W^T W`` for the first
    ``spectra_samples`` samples.
    """
    rows: list[dict] = []
    spectra: dict[tuple[int, int, str], np.ndarray] = {}
    layer_ids = list(range(lm.n_layers)) if layers is None else list(layers)
    iterator = enumerate(samples)
    if progress:
        iterator = tqdm(list(iterator), desc=f"{lm.name}: samples")
    for s, ids in iterator:
        if len(ids) < 2:
            raise CompendiumError(f"sample {s} has {len(ids)} token(s): the linear attention needs a context of >= 2")
        recs = capture_sample(lm, ids)
        for layer in layer_ids:
            rec = recs[layer]
            x = rec.hidden[-1]
            real = float(torch.linalg.vector_norm(rec.out_last.double()) / torch.linalg.vector_norm(x.double()))
            real_verdict = compare(real**2, 1.0)
            for name, m in block_surrogates(lm, layer, rec, constructions, options).items():
                ev = evaluate_map(m, x)
                if s < spectra_samples:
                    spectra[(s, layer, name)] = ev["eigenvalues"]
                rows.append({
                    "sample": s, "layer": layer, "construction": name, "n_tokens": len(ids),
                    "prop1_lhs": ev["prop1_lhs"], "prop1_rhs": ev["prop1_rhs"],
                    "prop1": ev["prop1"], "direct": ev["direct"], "meets": ev["prop1"] >= 0,
                    "ratio": ev["ratio"], "real_ratio": real, "real_grows": real_verdict >= 0,
                    "agrees": (ev["prop1"] >= 0) == (real_verdict >= 0),
                    "lambda_min": float(ev["eigenvalues"][0]), "lambda_max": float(ev["eigenvalues"][-1]),
                })
    return rows, spectra


EIGEN_VERSION = 1  # bump when eigen_records' numbers change: cached rows are then recomputed


def cached_records(lm: LoadedModel, samples: Sequence[Sequence[int]], constructions: Sequence[str],
                   options: SurrogateOptions = PAPER_OPTIONS, spectra_samples: int = 1,
                   layers: Sequence[int] | None = None, cache_dir: str | None = None) -> tuple[list[dict], dict]:
    """:func:`eigen_records`, kept under ``cache_dir/eigen`` by model fingerprint, token ids and settings (rows as
    CSV with every digit, spectra as npz); without ``cache_dir`` computed every time."""
    if cache_dir is None:
        return eigen_records(lm, samples, constructions, options, spectra_samples, layers)
    store = RunStore(f"{cache_dir}/eigen", {
        "model_fingerprint": lm.fingerprint, "dtype": str(lm.dtype), "samples": config_hash([list(x) for x in samples]),
        "constructions": list(constructions), "options": options.label(), "spectra_samples": spectra_samples,
        "layers": None if layers is None else [int(x) for x in layers], "version": EIGEN_VERSION}, create=False)
    rows_path, spectra_path = store.dir / "rows.csv", store.dir / "spectra.npz"
    if store.manifest().get("complete"):
        with np.load(spectra_path) as archive:
            spectra = {(int(s), int(layer), c): archive[k] for k in archive.files for s, layer, c in [k.split("|")]}
        return pd.read_csv(rows_path).to_dict("records"), spectra
    rows, spectra = eigen_records(lm, samples, constructions, options, spectra_samples, layers)
    store.dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(rows_path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.17g")
    with atomic_path(spectra_path) as tmp:
        np.savez(tmp, **{f"{s}|{layer}|{c}": v for (s, layer, c), v in spectra.items()})
    store.write_manifest(complete=True, model=lm.describe())
    return rows, spectra


def is_control(lm: LoadedModel) -> bool:
    """Whether ``lm`` is a randomly initialised control (:func:`helpers.experiments.zoo.untrained_twin`)."""
    return lm.name.startswith("gpt2-untrained-")


@dataclass
class EigenRun:
    """Everything :func:`run_eigen_check` measured.

    ``records``: one row per (model, dataset, sample, layer, construction) (columns of
    :func:`eigen_records` plus ``model`` = the model's label and ``dataset``); ``spectra``: eigenvalues
    of ``W^T W`` per ``(model label, dataset)`` (see :func:`eigen_records`); ``token_ids``: the samples'
    token ids per dataset and model name; ``timings``: seconds per model and dataset; ``names``: model
    name per label; ``controls``: labels of the randomly initialised controls.
    """

    records: pd.DataFrame
    spectra: dict[tuple[str, str], dict]
    token_ids: dict[str, dict[str, list[list[int]]]]
    timings: pd.DataFrame
    names: dict[str, str] = field(default_factory=dict)
    controls: list[str] = field(default_factory=list)


def run_eigen_check(models: Sequence[LoadedModel], texts: Mapping[str, Sequence[str]],
                    constructions: Sequence[str] = CONSTRUCTIONS, prof: EigenProfile | None = None,
                    n_samples: int | None = None, max_tokens: int | None = None, seed: int = 0,
                    cache_dir: str | None = None) -> EigenRun:
    """Every model on ``n_samples`` texts of every dataset in ``texts`` (the same texts for all models:
    :func:`pick_samples` keeps those long enough under every tokenizer), every ``prof.layer_stride``-th
    block, each model's rows cached under ``cache_dir`` when given. ``n_samples`` / ``max_tokens`` default to the
    profile's. Raises if Proposition 1 and the direct check ever disagree (they are the same inequality, see :mod:`helpers.surrogates.algebra`)."""
    prof = prof or PROFILES["default"].eigen
    n_samples, max_tokens = n_samples or prof.n_samples, max_tokens or prof.max_tokens
    rows: list[dict] = []
    spectra: dict[tuple[str, str], dict] = {}
    token_ids: dict[str, dict[str, list[list[int]]]] = {}
    timings = []
    for ds, ds_texts in texts.items():
        _, token_ids[ds] = pick_samples(ds_texts, models, n_samples, max_tokens, prof.min_tokens, seed)
        for m in models:
            t0 = time.time()
            layers = profile_layers(m.n_layers, prof.layer_stride)
            r, sp = cached_records(m, token_ids[ds][m.name], constructions, spectra_samples=prof.spectra_samples,
                                   layers=layers, cache_dir=cache_dir)
            rows += [dict(row, model=m.label, dataset=ds) for row in r]
            spectra[(m.label, ds)] = sp
            timings.append((m.label, ds, round(time.time() - t0, 1)))
    df = pd.DataFrame(rows)
    if len(df) and not (df["prop1"] == df["direct"]).all():
        raise RuntimeError("Proposition 1 and the direct check disagree: a numerical problem in helpers.surrogates")
    return EigenRun(records=df, spectra=spectra, token_ids=token_ids,
                    timings=pd.DataFrame(timings, columns=["model", "dataset", "seconds"]),
                    names={m.label: m.name for m in models}, controls=[m.label for m in models if is_control(m)])


def option_ablation(models: Sequence[LoadedModel], token_ids: Mapping[str, Sequence[Sequence[int]]],
                    constructions: Sequence[str] = CONSTRUCTIONS, prof: EigenProfile | None = None,
                    variants: Sequence[SurrogateOptions] = OPTION_VARIANTS, cache_dir: str | None = None) -> pd.DataFrame:
    """The linear surrogates (``jacobian`` left out: it has no options) of each model under every option
    variant, on the first ``prof.ablation_samples`` samples of ``token_ids[model name]`` and every
    ``prof.ablation_layer_stride``-th block: rows of :func:`eigen_records` plus ``model`` (label) and
    ``options`` (:meth:`SurrogateOptions.label`)."""
    prof = prof or PROFILES["default"].eigen
    linear_only = [c for c in constructions if c != "jacobian"]
    rows: list[dict] = []
    for m in models:
        ids = list(token_ids[m.name])[: prof.ablation_samples]
        layers = profile_layers(m.n_layers, prof.ablation_layer_stride)
        for opts in variants:
            r, _ = cached_records(m, ids, linear_only, options=opts, layers=layers, cache_dir=cache_dir)
            rows += [dict(row, model=m.label, options=opts.label()) for row in r]
    return pd.DataFrame(rows)


def pick_samples(texts: Sequence[str], models: Sequence[LoadedModel], n: int, max_tokens: int, min_tokens: int,
                 seed: int = 0) -> tuple[list[str], dict[str, list[list[int]]]]:
    """``n`` texts, in a seeded random order, that keep at least ``min_tokens`` tokens under every model's
    tokenizer (truncated to ``max_tokens``, and to each model's context); their token ids per model name."""
    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    chosen: list[str] = []
    ids: dict[str, list[list[int]]] = {m.name: [] for m in models}
    for i in order:
        if len(chosen) == n:
            break
        rows = {}
        for m in models:
            rows[m.name] = m.encode([texts[i]], min(max_tokens, m.context or max_tokens))[0]
        if all(len(r) >= min_tokens for r in rows.values()):
            chosen.append(texts[i])
            for name, row in rows.items():
                ids[name].append(row)
    if len(chosen) < n:
        raise CompendiumError(f"only {len(chosen)} of {len(texts)} texts have >= {min_tokens} tokens: lower min_tokens")
    return chosen, ids
