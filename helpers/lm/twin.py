"""The untrained twin: the control every statistic of a trained model is read against.

A twin has the trained model's architecture, configuration and tokenizer, and the family's own seeded random
initialisation (``AutoModelForCausalLM.from_config``), so it answers "what does the architecture alone give?".
"""

from __future__ import annotations

import copy
import gc

import torch

from helpers.lm.load import LoadedModel, wrap_model


def untrained_twin(lm: LoadedModel, seed: int = 0, release: bool = False) -> LoadedModel:
    """The randomly initialised twin of ``lm``: same config, dtype, device and tokenizer; weights drawn by the
    family's own initialisation after ``torch.manual_seed(seed)`` (deterministic for a given seed).

    ``release=True`` frees ``lm``'s weights first (they move to the ``meta`` device; ``lm`` is unusable after):
    a 1.5B model and its twin in float32 need 12 GB together, one at a time 6."""
    import transformers
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(lm.model.config)
    device, dtype = lm.input_device, lm.dtype
    if release:
        lm.model.to("meta")
        gc.collect()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model = model.to(device=device, dtype=dtype).eval()
    # the weights follow from the config, the seed and the library versions: no need to hash them (cache keys)
    fingerprint = f"twin:{lm.fingerprint}:seed{seed}:torch{torch.__version__}:transformers{transformers.__version__}"
    return wrap_model(model, lm.tokenizer, name=f"{lm.name}-untrained", label=f"{lm.label}, untrained twin",
                      fingerprint=fingerprint,
                      note=f"same architecture and config, random initialisation (seed {seed})")
