"""The untrained twin: the control every statistic of a trained model is read against.

A twin has the trained model's architecture, configuration and tokenizer, and the family's own seeded random
initialisation (``AutoModelForCausalLM.from_config``), so it answers "what does the architecture alone give?".
"""

from __future__ import annotations

import copy
import gc

import torch

from helpers.lm.load import LoadedModel, wrap_model


def untrained_twin(lm: LoadedModel, seed: int = 0, release: bool = False, init_std: float | None = None) -> LoadedModel:
    """The randomly initialised twin of ``lm``: same config, dtype, device and tokenizer; weights drawn by the
    family's own initialisation after ``torch.manual_seed(seed)`` (deterministic for a given seed).

    ``init_std`` sets the initialisation scale (``config.initializer_range``; None keeps the config's, which for
    a GGUF-derived config is the library default 0.02, not necessarily the released model's): the twin's
    non-decrease rate follows from it (cos ~ N(0, 1/d) and the ratio of update to stream), so it is a parameter.

    ``release=True`` frees ``lm``'s weights first (they move to the ``meta`` device; ``lm`` is unusable after):
    a 1.5B model and its twin in float32 need 12 GB together, one at a time 6."""
    import transformers
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(lm.model.config)
    if init_std is not None:
        config.initializer_range = float(init_std)
    device, dtype = lm.input_device, lm.dtype
    if release:
        lm.model.to("meta")
        gc.collect()
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model = model.to(device=device, dtype=dtype).eval()
    # the weights follow from the config, the seed and the library versions: no need to hash them (cache keys)
    scale = "" if init_std is None else f":std{init_std:g}"
    fingerprint = (f"twin:{lm.fingerprint}:seed{seed}{scale}:torch{torch.__version__}"
                   f":transformers{transformers.__version__}")
    return wrap_model(model, lm.tokenizer, name=f"{lm.name}-untrained", label=f"{lm.label}, untrained twin",
                      fingerprint=fingerprint,
                      note=f"same architecture and config, random initialisation (seed {seed}"
                           + ("" if init_std is None else f", std {init_std:g}") + ")")
