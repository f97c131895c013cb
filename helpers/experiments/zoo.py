"""Untrained twins: the control every statistic of a trained model is read against (DESIGN.md, nulls).

A twin has the trained model's architecture, configuration and tokenizer, and the family's own seeded random
initialisation (``AutoModelForCausalLM.from_config``), so it answers "what does the architecture alone give?".
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from helpers import CompendiumError
from helpers.corpus.natural import gpt2_bpe_tokenizer
from helpers.lm.load import LoadedModel, load_model, wrap_model
from helpers.lm.registry import REGISTRY
from helpers.lm.twin import untrained_twin
from helpers.train.checkpoints import list_checkpoints, load_checkpoint
from helpers.train.loop import build_model
from helpers.train.recipes import natural_model_dir, natural_run_dir, natural_setup

TRAINED, TWIN, CHECKPOINT = "trained", "untrained twin", "checkpoint"


@dataclass
class Entry:
    """One model of the table: the loaded model, the base model it belongs to (``group``), its role (trained,
    untrained twin, checkpoint, or a quantisation scheme) and, for checkpoints, epoch and optimiser step."""

    lm: LoadedModel
    group: str
    role: str
    epoch: int | None = None
    step: int | None = None


def load_available(spec: str, profile: str = "default", cache_dir: str | Path = "results/cache", seed: int = 0,
                   device: str = "cpu") -> LoadedModel | None:
    """Load ``spec`` for a cross-model run; ``"natural"`` is the project-trained GPT-2-architecture model of
    notebook 06 (of ``profile``). ``None`` with a printed note when that model is not trained yet or a registry
    model's package is not installed; any other failure is raised."""

    if spec == "natural":
        lm = load_trained_natural(str(cache_dir), profile, seed, device)
        if lm is None:
            print(f"natural: the natural-text model of profile '{profile}' is not trained yet "
                  "(run notebook 06): skipped")
        return lm
    try:
        return load_model(spec, device=device)
    except CompendiumError as exc:
        if spec not in REGISTRY:
            raise
        print(f"{spec}: not available ({exc}): skipped")
        return None


def hub_model_cached(repo_id: str) -> bool:
    """Whether ``repo_id`` can be loaded without the network (its config is in the local HF cache)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 -- any failure means 'not available offline'
        return False
    return isinstance(hit, str)


def untrained_natural(profile: str = "default", seed: int = 0) -> LoadedModel:
    """The project's natural-text GPT-2-architecture model of ``profile`` *before* training: same
    config and tokenizer as :func:`helpers.training.natural_model_dir`'s model, GPT-2's random init."""

    data, cfg, _ = natural_setup(profile, seed)
    model = build_model(cfg, seed).eval()
    label = f"GPT-2 arch., untrained ({cfg.n_layer} layers, d={cfg.n_embd}, random init seed {seed})"
    return wrap_model(model, gpt2_bpe_tokenizer(data["vocab_size"]), name=f"gpt2-untrained-{profile}", label=label,
                      note="randomly initialised control (same config as the trained natural-text model)")


def load_trained_natural(cache_dir: str = "results/cache", profile: str = "default", seed: int = 0,
                         device: str = "cpu") -> LoadedModel | None:
    """The project's natural-text GPT-2-architecture model (notebook 06) if trained, else ``None``."""

    folder = natural_model_dir(cache_dir, profile, seed)
    if folder is None:
        return None
    lm = load_model(str(folder), device=device)
    cfg = lm.model.config
    lm.name = f"gpt2-natural-{profile}"
    lm.label = f"GPT-2 arch., trained on natural text ({cfg.n_layer} layers, d={cfg.n_embd}, {profile} profile)"
    return lm


def eigen_models(model: str, profile: str = "default", include_trained: bool = True, include_untrained: bool = True,
                 extra_models: Sequence[str] = (), cache_dir: str = "results/cache", seed: int = 0,
                 device: str = "cpu", dtype: str = "float32") -> list[LoadedModel]:
    """The models notebook 05 checks, in order: ``model``; the trained natural-text model of ``profile``
    (when trained, else a printed note); its untrained twin; each of ``extra_models`` that is in the
    local Hugging Face cache (the run is offline; a printed note for the others)."""

    models = [load_model(model, device=device, dtype=dtype)]
    if include_trained:
        trained = load_trained_natural(cache_dir, profile, seed, device)
        if trained is None:
            print(f"the natural-text GPT-2-architecture model of profile '{profile}' is not trained yet: "
                  "run notebook 06 first")
        else:
            models.append(trained)
    if include_untrained:
        models.append(untrained_natural(profile, seed))
    for hub_id in extra_models:
        if hub_model_cached(hub_id):
            models.append(load_model(hub_id, device=device, dtype=dtype))
        else:
            print(f"'{hub_id}' is not in the local Hugging Face cache (offline run): skipped")
    return models


def natural_checkpoints(profile: str, cache_dir: str | Path = "results/cache", seed: int = 0,
                        device: str = "cpu") -> Iterator[Entry]:
    """The project-trained natural-text model of ``profile`` at every checkpoint (epoch 0 = its initialisation,
    the untrained twin); nothing, with a printed note, when notebook 06 has not trained it."""
    import json


    data, cfg, _ = natural_setup(profile, seed)
    paths = list_checkpoints(natural_run_dir(cache_dir, profile, seed))
    if natural_model_dir(cache_dir, profile, seed) is None or not paths or paths[0].name != "epoch_000":
        # an unfinished run would be reported as the trained model
        print(f"natural: the natural-text model of profile '{profile}' is not trained yet (run notebook 06): skipped")
        return
    tokenizer = gpt2_bpe_tokenizer(data["vocab_size"])
    for path in paths:
        state = json.loads((path / "state.json").read_text())
        label = f"GPT-2 arch. on natural text ({cfg.n_layer} layers, d={cfg.n_embd}), epoch {state['epoch']}"
        lm = load_checkpoint(path, device=device, tokenizer=tokenizer, label=label)
        lm.name = f"gpt2-natural-{profile}-epoch{state['epoch']}"
        lm.note = "project-trained (notebook 06)" + (", initialisation" if state["epoch"] == 0 else "")
        yield Entry(lm, group="natural", role=CHECKPOINT, epoch=int(state["epoch"]), step=int(state["step"]))


def model_entries(spec: str, profile: str, cache_dir: str | Path = "results/cache", twin_seed: int = 0,
                  device: str = "cpu") -> Iterator[Entry]:
    """The entries of one model of the table: ``"natural"`` gives every checkpoint of the project-trained model;
    anything else (registry name, hub id, local folder or .gguf) gives the model and its untrained twin. A
    registry model whose package is not installed, or a hub id not in the local cache (offline runs), gives
    nothing and a printed note; other failures are raised."""

    if spec == "natural":
        yield from natural_checkpoints(profile, cache_dir, device=device)
        return
    if spec in REGISTRY:
        lm = load_available(spec, profile, cache_dir, device=device)
    elif Path(spec).exists():
        lm = load_model(spec, device=device)
    elif hub_model_cached(spec):
        try:  # its config is cached; its weights may not be
            lm = load_model(spec, device=device)
        except (CompendiumError, OSError) as exc:
            print(f"{spec}: cannot be loaded offline ({exc}): skipped")
            lm = None
    else:
        print(f"{spec}: not in the local Hugging Face cache and not a local path (offline run): skipped")
        lm = None
    if lm is None:
        return
    yield Entry(lm, group=spec, role=TRAINED)
    yield Entry(untrained_twin(lm, seed=twin_seed), group=spec, role=TWIN)
