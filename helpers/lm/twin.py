"""The untrained twin: the control every statistic of a trained model is read against.

A twin has the trained model's architecture, configuration and tokenizer, and the family's own seeded random
initialisation (``AutoModelForCausalLM.from_config``), so it answers "what does the architecture alone give?".
"""

from __future__ import annotations

import copy

import torch

from helpers.lm.load import LoadedModel, free_memory, wrap_model


def output_projections(block: torch.nn.Module) -> list[torch.nn.Module]:
    """The output projection of each sublayer of a decoder block: in every direct child of the block that holds
    2-D weights (attention, MLP), the last such module in definition order (``o_proj``/``down_proj``, GPT-2's
    ``c_proj``), and the last of the matrices that sit directly on the block (OPT's ``fc2``); the block's norms
    hold 1-D weights only."""
    def is_matrix(m: torch.nn.Module) -> bool:
        return getattr(m, "weight", None) is not None and m.weight.ndim == 2

    out, direct = [], []
    for child in block.children():
        if is_matrix(child):
            direct.append(child)
            continue
        mats = [m for m in child.modules() if is_matrix(m)]
        if mats:
            out.append(mats[-1])
    return out + direct[-1:]


def untrained_twin(lm: LoadedModel, seed: int = 0, release: bool = False, init_std: float | None = None,
                   zero_output: bool = False, device: str | torch.device | None = None) -> LoadedModel:
    """The randomly initialised twin of ``lm``: same config, dtype, device and tokenizer; weights drawn by the
    family's own initialisation after ``torch.manual_seed(seed)`` (deterministic for a given seed).

    ``init_std`` sets the initialisation scale (``config.initializer_range``; None keeps the config's, which for
    a GGUF-derived config is the library default 0.02, not necessarily the released model's): the twin's
    non-decrease rate follows from it (cos ~ N(0, 1/d) and the ratio of update to stream), so it is a parameter.

    ``release=True`` frees ``lm``'s weights first (they move to the ``meta`` device; ``lm`` is unusable after):
    a 1.5B model and its twin in float32 need 12 GB together, one at a time 6.

    ``zero_output=True`` zeroes every sublayer's output projection (:func:`output_projections`; weight and bias):
    every update is then exactly 0 at initialisation (the ReZero / T-Fixup style of starting as the identity),
    so no norm changes and the conjecture holds trivially, with equality. ``device`` (default ``lm``'s) lets further
    twins be built from a model whose weights were released. A skeleton ``lm`` (:attr:`LoadedModel.skeleton`) gives
    a skeleton twin (meta device, same fingerprint as the real twin: enough to read its cached runs) unless
    ``device`` is given."""
    import transformers
    from transformers import AutoModelForCausalLM

    config = copy.deepcopy(lm.model.config)
    if init_std is not None:
        config.initializer_range = float(init_std)
    device, dtype = (lm.input_device if device is None else torch.device(device)), lm.dtype
    if release and not lm.skeleton:
        lm.model.to("meta")
        free_memory()
    torch.manual_seed(seed)
    if device.type == "meta":
        with device:
            model = AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
    else:
        model = AutoModelForCausalLM.from_config(config)
        model = model.to(device=device, dtype=dtype).eval()
    if zero_output:
        with torch.no_grad():
            for block in wrap_model(model, lm.tokenizer, fingerprint="-").blocks:  # blocks only
                for proj in output_projections(block):
                    proj.weight.zero_()
                    if getattr(proj, "bias", None) is not None:
                        proj.bias.zero_()
    # the weights follow from the config, the seed and the library versions: no need to hash them (cache keys)
    scale = ("" if init_std is None else f":std{init_std:g}") + (":zero-output" if zero_output else "")
    fingerprint = (f"twin:{lm.fingerprint}:seed{seed}{scale}:torch{torch.__version__}"
                   f":transformers{transformers.__version__}")
    twin = wrap_model(model, lm.tokenizer, name=f"{lm.name}-untrained", label=f"{lm.label}, untrained twin",
                      fingerprint=fingerprint,
                      note=f"same architecture and config, random initialisation (seed {seed}"
                           + ("" if init_std is None else f", std {init_std:g}")
                           + (", output projections zero" if zero_output else "") + ")")
    if "release_params" in lm.extra:  # the released size (a GGUF config may carry a tied head as its own tensor)
        twin.extra["release_params"] = lm.extra["release_params"]
    twin.extra["skeleton"] = device.type == "meta"
    return twin
