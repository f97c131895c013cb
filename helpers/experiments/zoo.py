"""The model zoo of the experiments: a model spec -> a loaded model, or a printed note and ``None`` when it is
not here (offline runs, packages not installed, notebook 06 not run yet), plus its controls.

A spec is a registry name, a hub id, a local folder or ``.gguf`` file, or ``"natural"`` (the project's own
GPT-2-architecture model trained on natural text by notebook 06). :func:`load_or_skip` is the one place that
decides "load it or skip it"; :func:`model_entries` adds the untrained twin (:mod:`helpers.lm.twin`) and
:func:`eigen_models` the models of notebook 05.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from helpers import CompendiumError
from helpers.config import PROFILES, Profile
from helpers.corpus.natural import gpt2_bpe_tokenizer
from helpers.lm.load import LoadedModel, load_model, wrap_model
from helpers.lm.registry import REGISTRY
from helpers.lm.twin import untrained_twin
from helpers.paths import CACHE_DIR
from helpers.train.checkpoints import list_checkpoints, load_checkpoint
from helpers.train.loop import build_model
from helpers.train.recipes import natural_model_dir, natural_run_dir, natural_setup

TRAINED, TWIN, CHECKPOINT = "trained", "untrained twin", "checkpoint"
NATURAL = "natural"


@dataclass
class Entry:
    """One model of a cross-model table: the loaded model, the base model it belongs to (``group``), its role
    (trained, untrained twin, checkpoint, or a quantisation scheme) and, for checkpoints, epoch and step."""

    lm: LoadedModel
    group: str
    role: str
    epoch: int | None = None
    step: int | None = None
    load: Callable[[], LoadedModel] | None = None  # the model with its weights, for an entry whose lm is a skeleton

    def with_weights(self) -> LoadedModel:
        """The entry's model with its weights: ``lm`` itself, or (a skeleton whose runs were not all cached) the
        model ``load`` gives, which then replaces it."""
        if self.lm.skeleton:
            if self.load is None:
                raise CompendiumError(f"{self.lm.label}: its runs are not cached and the entry cannot load its weights")
            self.lm = self.load()
        return self.lm


def hub_model_cached(repo_id: str) -> bool:
    """Whether ``repo_id`` can be loaded without the network (its config is in the local HF cache)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 -- any failure means 'not available offline'
        return False
    return isinstance(hit, str)


def load_or_skip(spec: str, profile: Profile = PROFILES["default"], cache_dir: str | Path = CACHE_DIR, seed: int = 0,
                 device: str = "cpu", dtype: str = "float32", weights: bool = True) -> LoadedModel | None:
    """Load ``spec``, or print one line saying why it is skipped and return ``None``: ``"natural"`` before notebook
    06 trained it, a registry model whose package is not installed, a hub id that is not in the local cache (or
    whose weights are not). A local path or any other failure is raised (the user asked for it). ``weights=False``
    gives a skeleton (:func:`helpers.lm.load.load_model`) except for ``"natural"`` (small: always loaded)."""
    if spec == NATURAL:
        lm = load_trained_natural(cache_dir, profile, seed, device)
        if lm is None:
            print(f"{NATURAL}: the natural-text model of profile '{profile.name}' is not trained yet (run notebook 06): "
                  "skipped")
        return lm
    if spec in REGISTRY:
        try:
            return load_model(spec, device=device, dtype=dtype, weights=weights)
        except CompendiumError as exc:
            print(f"{spec}: not available ({exc}): skipped")
            return None
    if Path(spec).expanduser().exists():
        return load_model(spec, device=device, dtype=dtype, weights=weights)
    if not hub_model_cached(spec):
        print(f"{spec}: not in the local Hugging Face cache and not a local path (offline run): skipped")
        return None
    try:  # its config is cached; its weights may not be
        return load_model(spec, device=device, dtype=dtype, weights=weights)
    except (CompendiumError, OSError) as exc:
        print(f"{spec}: cannot be loaded offline ({exc}): skipped")
        return None


def load_trained_natural(cache_dir: str | Path = CACHE_DIR, profile: Profile = PROFILES["default"], seed: int = 0,
                         device: str = "cpu") -> LoadedModel | None:
    """The project's natural-text GPT-2-architecture model (notebook 06) if trained, else ``None``."""
    folder = natural_model_dir(cache_dir, profile, seed)
    if folder is None:
        return None
    lm = load_model(str(folder), device=device)
    cfg = lm.model.config
    lm.name = f"gpt2-natural-{profile.name}"
    lm.label = f"GPT-2 arch., trained on natural text ({cfg.n_layer} layers, d={cfg.n_embd}, {profile.name} profile)"
    return lm


def untrained_natural(profile: Profile = PROFILES["default"], seed: int = 0) -> LoadedModel:
    """The project's natural-text GPT-2-architecture model of ``profile`` *before* training: same
    config and tokenizer as :func:`helpers.train.recipes.natural_model_dir`'s model, GPT-2's random init."""

    data, cfg, _ = natural_setup(profile, seed)
    model = build_model(cfg, seed).eval()
    label = f"GPT-2 arch., untrained ({cfg.n_layer} layers, d={cfg.n_embd}, random init seed {seed})"
    return wrap_model(model, gpt2_bpe_tokenizer(data["vocab_size"]), name=f"gpt2-untrained-{profile.name}", label=label,
                      note="randomly initialised control (same config as the trained natural-text model)")


def eigen_models(model: str, profile: Profile = PROFILES["default"], include_trained: bool = True, include_untrained: bool = True,
                 extra_models: Sequence[str] = (), cache_dir: str | Path = CACHE_DIR, seed: int = 0,
                 device: str = "cpu", dtype: str = "float32") -> list[LoadedModel]:
    """The models notebook 05 checks, in order: ``model``; the trained natural-text model of ``profile``
    (when trained, else a printed note); its untrained version; each of ``extra_models`` that is here."""
    models = [load_model(model, device=device, dtype=dtype)]
    if include_trained:
        models.append(load_or_skip(NATURAL, profile, cache_dir, seed, device))
    if include_untrained:
        models.append(untrained_natural(profile, seed))
    models += [load_or_skip(spec, profile, cache_dir, seed, device, dtype) for spec in extra_models]
    return [m for m in models if m is not None]


def natural_checkpoints(profile: Profile, cache_dir: str | Path = CACHE_DIR, seed: int = 0,
                        device: str = "cpu") -> Iterator[Entry]:
    """The project-trained natural-text model of ``profile`` at every checkpoint (epoch 0 = its initialisation,
    the untrained twin); nothing, with a printed note, when notebook 06 has not trained it."""
    data, cfg, _ = natural_setup(profile, seed)
    paths = list_checkpoints(natural_run_dir(cache_dir, profile, seed))
    if natural_model_dir(cache_dir, profile, seed) is None or not paths or paths[0].name != "epoch_000":
        # an unfinished run would be reported as the trained model
        print(f"natural: the natural-text model of profile '{profile.name}' is not trained yet (run notebook 06): "
              "skipped")
        return
    tokenizer = gpt2_bpe_tokenizer(data["vocab_size"])
    for path in paths:
        state = json.loads((path / "state.json").read_text())
        label = f"GPT-2 arch. on natural text ({cfg.n_layer} layers, d={cfg.n_embd}), epoch {state['epoch']}"
        lm = load_checkpoint(path, device=device, tokenizer=tokenizer, label=label)
        lm.name = f"gpt2-natural-{profile.name}-epoch{state['epoch']}"
        lm.note = "project-trained (notebook 06)" + (", initialisation" if state["epoch"] == 0 else "")
        yield Entry(lm, group="natural", role=CHECKPOINT, epoch=int(state["epoch"]), step=int(state["step"]))


def model_entries(spec: str, profile: Profile, cache_dir: str | Path = CACHE_DIR, twin_seed: int = 0,
                  device: str = "cpu") -> Iterator[Entry]:
    """The entries of one model of a cross-model table: ``"natural"`` gives every checkpoint of the
    project-trained model; anything else gives the model and then its untrained twin (:func:`pair_entries`), or
    nothing and a printed note (:func:`load_or_skip`)."""
    if spec == NATURAL:
        yield from natural_checkpoints(profile, cache_dir, device=device)
        return
    yield from pair_entries(spec, profile, cache_dir, twin_seed, device)


def pair_entries(spec: str, profile: Profile, cache_dir: str | Path = CACHE_DIR, twin_seed: int = 0,
                 device: str = "cpu") -> Iterator[Entry]:
    """The model ``spec`` and then its untrained twin (seed ``twin_seed``), or nothing and a printed note
    (:func:`load_or_skip`). Both start as skeletons (``"natural"``: loaded, it is small): :meth:`Entry.with_weights`
    loads the model, or builds the twin, only for work that is not cached, so a notebook whose runs are all cached
    loads no weights. The trained model's weights are freed when the twin is built (one model in memory); the
    twin needs only the config, so a trained model that was never loaded is not loaded for it."""
    skeleton = load_or_skip(spec, profile, cache_dir, twin_seed, device, weights=False)
    if skeleton is None:
        return
    trained = Entry(skeleton, group=spec, role=TRAINED,
                    load=lambda: load_or_skip(spec, profile, cache_dir, twin_seed, device))
    yield trained

    def twin() -> LoadedModel:
        base = trained.lm
        return untrained_twin(base, seed=twin_seed, release=not base.skeleton,
                              device=device if base.skeleton else None)

    yield Entry(untrained_twin(skeleton, seed=twin_seed, device="meta"), group=spec, role=TWIN, load=twin)
