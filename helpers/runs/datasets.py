"""A profile's sample of a test corpus through the cached analysis: :class:`DatasetRun` (records with what
produced them and a provenance caption), one model over every dataset (notebooks 02-04), and its untrained twin
on the same texts (the null of Table 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from helpers import CompendiumError
from helpers.config import PROFILES, Profile
from helpers.corpus.samples import describe_empty, filtered_samples, sample_texts
from helpers.corpus.sources import check_dataset
from helpers.lm.load import LoadedModel, load_model
from helpers.lm.twin import untrained_twin
from helpers.paths import CACHE_DIR, FILTERED_DIR
from helpers.runs.analysis import AnalysisConfig, NotFinished, run_analysis


def _counts(dataset: str, n_texts: int, n_tokens: int) -> str:
    return f"{dataset}: {n_texts:,} texts, {n_tokens:,} tokens"


def _join(model_line: str, data: str, extra: str, profile: str) -> str:
    return " | ".join(p for p in (model_line, data, extra, f"profile {profile}" if profile else "") if p)


def provenance(model_line: str, dataset: str, n_texts: int, n_tokens: int, extra: str = "", profile: str = "") -> str:
    """One line naming model, data, sample count, filter and profile, for figure and table captions."""
    return _join(model_line, _counts(dataset, n_texts, n_tokens), extra, profile)


@dataclass
class DatasetRun:
    """Records of one model on one dataset, with what produced them."""

    records: dict[str, np.ndarray]
    dataset: str
    n_texts: int
    n_layers: int
    min_position: int
    model_line: str
    run_dir: str
    lens_tokens: str = "every token"
    padding_share: float = 0.0
    profile: str = ""

    @property
    def n_tokens(self) -> int:
        """Number of token records."""
        return int(len(self.records["text_id"]))

    def caption(self, extra: str = "") -> str:
        """Provenance line: model, data, sample count, filter (``extra``), profile."""
        return provenance(self.model_line, self.dataset, self.n_texts, self.n_tokens, extra, self.profile)


def corpora_caption(runs: dict[str, DatasetRun], extra: str = "") -> str:
    """One provenance line for a figure over several datasets of one model: model, each dataset's counts, filter
    (``extra``) and profile, in :func:`provenance`'s parts."""
    first = next(iter(runs.values()))
    data = " + ".join(_counts(r.dataset, r.n_texts, r.n_tokens) for r in runs.values())
    return _join(first.model_line, data, extra, first.profile)


def analyse_dataset(
    lm: LoadedModel,
    dataset: str,
    profile: Profile = PROFILES["default"],
    n_texts: int | None = None,
    max_tokens: int | None = None,
    min_position: int = 4,
    batch_size: int | None = None,
    batch_tokens: int | None = 4096,
    lens_share: float | str | None = None,
    logit_lens: bool | None = None,
    lens: bool = True,
    seed: int = 0,
    cache_dir: str = CACHE_DIR,
    filtered_dir: str = FILTERED_DIR,
    data_dir: str | None = None,
    shard: str | None = None,
    progress: bool = True,
    cached_only: bool = False,
) -> DatasetRun:
    """Sample ``n_texts`` filtered texts of ``dataset`` (seeded) and analyse them (cached, resumable).

    ``None`` for ``n_texts`` / ``max_tokens`` takes the profile's value (the paper profile: every
    text, the model's context). ``lens_share`` None takes the profile's share, "all" runs the lens on every
    token; ``logit_lens`` None takes the profile's choice; ``lens=False`` computes norms only (no lens at all).
    """

    check_dataset(dataset)
    prof = profile.corpus
    n = n_texts if n_texts is not None else prof.n_texts(dataset, lm.name)
    tokens = max_tokens if max_tokens is not None else (prof.max_tokens or min(lm.context or 2048, 8192))
    context = lm.context
    if context is not None and tokens > context:
        raise CompendiumError(f"max_tokens (--max-tokens) {tokens} is beyond the context of {lm.label} ({context} "
                              f"tokens): use at most {context}")
    kept, report = filtered_samples(dataset, filtered_dir, data_dir)
    if not kept:
        raise CompendiumError(describe_empty(report, folder=data_dir))
    texts = sample_texts(kept, n, seed)
    share = None if lens_share == "all" or not lens else (prof.lens_share if lens_share is None else lens_share)
    config = AnalysisConfig(max_tokens=tokens, min_position=min_position, n_vectors=prof.n_vectors, lens_share=share,
                            filter_share=prof.filter_share if share is not None else None,
                            lens=lens, logit_lens=lens and (prof.logit_lens if logit_lens is None else logit_lens))
    records, store = run_analysis(
        lm,
        texts,
        config,
        cache_dir=cache_dir,
        dataset=dataset,
        batch_size=batch_size,
        batch_tokens=batch_tokens,
        shard=shard,
        progress=progress,
        cached_only=cached_only,
    )
    return DatasetRun(
        records=records,
        dataset=dataset,
        n_texts=len(texts),
        n_layers=lm.n_layers,
        min_position=min_position,
        model_line=lm.describe() + f"; max {tokens} tokens/text",
        run_dir=str(store.dir),
        lens_tokens=config.lens_tokens(),
        padding_share=float(store.manifest().get("padding_share", 0.0)),
        profile=profile.name,
    )


def analyse_corpora(
    model: str,
    datasets: list[str] | tuple[str, ...] = ("wikitext-103", "1bw"),
    profile: Profile = PROFILES["default"],
    device: str = "cpu",
    dtype: str = "float32",
    device_map: str | None = None,
    **kwargs,
) -> tuple[LoadedModel, dict[str, DatasetRun]]:
    """Load ``model`` and analyse every dataset (cached, resumable): the shared first step of notebooks
    02-04. ``kwargs`` go to :func:`analyse_dataset` (n_texts, max_tokens, min_position, batch_size, seed,
    cache_dir, filtered_dir, data_dir, shard)."""

    if isinstance(datasets, str):
        datasets = [datasets]
    for ds in datasets:
        check_dataset(ds)
    if device_map is None and dtype != "auto" and not kwargs.get("shard"):
        skeleton = load_model(model, device=device, dtype=dtype, weights=False)
        runs = cached_runs(skeleton, datasets, profile, **kwargs)
        if runs is not None:  # every run finished before: no weights loaded
            print(f"{skeleton.describe()} (cached runs; weights not loaded)")
            return skeleton, runs
    lm = load_model(model, device=device, dtype=dtype, device_map=device_map)
    print(lm.describe())
    return lm, {ds: analyse_dataset(lm, ds, profile=profile, **kwargs) for ds in datasets}


def cached_runs(lm: LoadedModel, datasets: list[str] | tuple[str, ...], profile: Profile = PROFILES["default"],
                **kwargs) -> dict[str, DatasetRun] | None:
    """Every dataset's run of ``lm`` (a skeleton is enough) read from the cache, or None if any has not finished:
    a notebook that only reads its runs loads no weights. ``kwargs`` as :func:`analyse_dataset`'s."""
    try:
        return {ds: analyse_dataset(lm, ds, profile=profile, **(kwargs | {"cached_only": True, "progress": False}))
                for ds in datasets}
    except NotFinished:
        return None


def analyse_twin(lm: LoadedModel, runs: dict[str, DatasetRun], profile: Profile = PROFILES["default"], twin_seed: int = 0,
                 release: bool = False, **kwargs) -> tuple[LoadedModel, dict[str, DatasetRun]]:
    """The untrained twin of ``lm`` (:func:`helpers.lm.twin.untrained_twin` with ``twin_seed``) on the same texts as
    ``runs`` (same sample size per dataset), norms only: the null of Table 1. ``kwargs`` go to
    :func:`analyse_dataset` (max_tokens, min_position, batch_tokens, seed of the text sample, cache_dir, ...).
    ``release=True`` frees ``lm``'s weights first (its config and labels stay usable): a 1.5B model and its twin
    in float32 need 12 GB together (notebook 03 peaked at 15.9 GB with both), 6 one at a time."""

    n_texts = {ds: run.n_texts for ds, run in runs.items()}
    if not kwargs.get("shard"):  # its runs cached: a skeleton twin (no initialisation, nothing freed) reads them
        skeleton = untrained_twin(lm, seed=twin_seed, device="meta")
        cached = cached_twin_runs(skeleton, n_texts, profile, **kwargs)
        if cached is not None:
            return skeleton, cached
    device = lm.extra.get("device", "cpu") if lm.skeleton else None  # a skeleton's twin: on the asked-for device
    twin = untrained_twin(lm, seed=twin_seed, release=release, device=device)
    return twin, {ds: analyse_dataset(twin, ds, profile=profile, n_texts=n, lens=False, **kwargs)
                  for ds, n in n_texts.items()}


def cached_twin_runs(twin: LoadedModel, n_texts: dict[str, int], profile: Profile,
                     **kwargs) -> dict[str, DatasetRun] | None:
    """The twin's norms-only runs on ``n_texts`` texts per dataset from the cache, or None if any is missing."""
    try:
        return {ds: analyse_dataset(twin, ds, profile=profile, n_texts=n, lens=False,
                                    **(kwargs | {"cached_only": True, "progress": False})) for ds, n in n_texts.items()}
    except NotFinished:
        return None
