"""Untrained twins: the control every statistic of a trained model is read against (DESIGN.md, nulls).

A twin has the trained model's architecture, configuration and tokenizer, and the family's own seeded random
initialisation (``AutoModelForCausalLM.from_config``), so it answers "what does the architecture alone give?".
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from helpers import CompendiumError
from helpers.models import LoadedModel, wrap_model


def untrained_twin(lm: LoadedModel, seed: int = 0) -> LoadedModel:
    """The randomly initialised twin of ``lm``: same config, dtype, device and tokenizer; weights drawn by the
    family's own initialisation after ``torch.manual_seed(seed)`` (deterministic for a given seed)."""
    import transformers
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(lm.model.config)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model = model.to(device=lm.input_device, dtype=lm.dtype).eval()
    # the weights follow from the config, the seed and the library versions: no need to hash them (cache keys)
    fingerprint = f"twin:{lm.fingerprint}:seed{seed}:torch{torch.__version__}:transformers{transformers.__version__}"
    return wrap_model(model, lm.tokenizer, name=f"{lm.name}-untrained", label=f"{lm.label}, untrained twin",
                      fingerprint=fingerprint,
                      note=f"same architecture and config, random initialisation (seed {seed})")


def load_available(spec: str, profile: str = "default", cache_dir: str | Path = "results/cache", seed: int = 0,
                   device: str = "cpu") -> LoadedModel | None:
    """Load ``spec`` for a cross-model run; ``"natural"`` is the project-trained GPT-2-architecture model of
    notebook 06 (of ``profile``). ``None`` with a printed note when that model is not trained yet or a registry
    model's package is not installed; any other failure is raised."""
    from helpers.models import REGISTRY, load_model
    from helpers.surrogates.inputs import load_trained_natural

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
