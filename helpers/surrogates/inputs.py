"""The models and samples of the eigenvalue check (notebook 05): the model under test, the project's
trained natural-text GPT-2-architecture model, its untrained twin (the control) and cached hub models;
texts that keep enough tokens under every model's tokenizer."""

from __future__ import annotations

import random
from collections.abc import Sequence

from helpers import CompendiumError
from helpers.models import LoadedModel


def hub_model_cached(repo_id: str) -> bool:
    """Whether ``repo_id`` can be loaded without the network (its config is in the local HF cache)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 -- any failure means 'not available offline'
        return False
    return isinstance(hit, str)


def untrained_twin(profile: str = "default", seed: int = 0) -> LoadedModel:
    """The project's natural-text GPT-2-architecture model of ``profile`` *before* training: same
    config and tokenizer as :func:`helpers.training.natural_model_dir`'s model, GPT-2's random init."""
    from helpers.models import wrap_model
    from helpers.training import build_model, gpt2_bpe_tokenizer, natural_setup

    data, cfg, _ = natural_setup(profile, seed)
    model = build_model(cfg, seed).eval()
    label = f"GPT-2 arch., untrained ({cfg.n_layer} layers, d={cfg.n_embd}, random init seed {seed})"
    return wrap_model(model, gpt2_bpe_tokenizer(data["vocab_size"]), name=f"gpt2-untrained-{profile}", label=label,
                      note="randomly initialised control (same config as the trained natural-text model)")


def load_trained_natural(cache_dir: str = "results/cache", profile: str = "default", seed: int = 0,
                         device: str = "cpu") -> LoadedModel | None:
    """The project's natural-text GPT-2-architecture model (notebook 06) if trained, else ``None``."""
    from helpers.models import load_model
    from helpers.training import natural_model_dir

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
    from helpers.models import load_model

    models = [load_model(model, device=device, dtype=dtype)]
    if include_trained:
        trained = load_trained_natural(cache_dir, profile, seed, device)
        if trained is None:
            print(f"the natural-text GPT-2-architecture model of profile '{profile}' is not trained yet: "
                  "run notebook 06 first")
        else:
            models.append(trained)
    if include_untrained:
        models.append(untrained_twin(profile, seed))
    for hub_id in extra_models:
        if hub_model_cached(hub_id):
            models.append(load_model(hub_id, device=device, dtype=dtype))
        else:
            print(f"'{hub_id}' is not in the local Hugging Face cache (offline run): skipped")
    return models


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
            ctx = getattr(m.model.config, "n_positions", None) or getattr(m.model.config, "max_position_embeddings", None)
            rows[m.name] = m.encode([texts[i]], min(max_tokens, ctx or max_tokens))[0]
        if all(len(r) >= min_tokens for r in rows.values()):
            chosen.append(texts[i])
            for name, row in rows.items():
                ids[name].append(row)
    if len(chosen) < n:
        raise CompendiumError(f"only {len(chosen)} of {len(texts)} texts have >= {min_tokens} tokens: lower min_tokens")
    return chosen, ids
