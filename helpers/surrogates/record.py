"""One real forward pass on one sample: what every block call saw and produced (the surrogates' input).

The block call itself is captured with the project's one capture primitive,
:func:`helpers.residual.hooks.block_hooks` (which binds positional and keyword arguments with
``bind_block_call``); extra pre-hooks record the real inputs of the block's FFN norm, FFN and
post-norms at the current (last) token, which the frozen constructions need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from helpers.lm.families import family
from helpers.lm.load import LoadedModel
from helpers.residual.hooks import block_hooks


@dataclass
class LayerRecord:
    """What one real block call saw and produced for one sample (batch of one, no padding).

    ``hidden`` [T, D] is the block input (``z^l``), ``out_last`` [D] the block output at the current
    token (last position), ``kwargs`` the block call's other arguments by name, ``parts`` the real
    inputs of sub-modules at the current token (``norm_mlp``: the mid state after attention,
    ``mlp``: the FFN input, ``post_attn`` / ``post_mlp``: the inputs of Gemma's post-norms).
    """

    hidden: torch.Tensor
    out_last: torch.Tensor
    kwargs: dict
    parts: dict[str, torch.Tensor] = field(default_factory=dict)


def capture_sample(lm: LoadedModel, token_ids: Sequence[int]) -> list[LayerRecord]:
    """One real forward pass on one unpadded sample; a :class:`LayerRecord` per block.

    :func:`helpers.residual.hooks.block_hooks` records every block's input and the arguments the model passes
    it (attention mask, position ids, rotary embeddings) and its output; pre-hooks on the block's FFN
    norm, FFN and post-norms record their real inputs at the current (last) token.
    """
    layout = row.layout if (row := family(lm.family)) else None
    records: list[dict] = [dict(parts={}) for _ in range(lm.n_layers)]
    handles = []

    def on_input(i: int, hidden: torch.Tensor, named: dict) -> None:
        records[i]["hidden"] = hidden[0].detach()
        records[i]["kwargs"] = named

    def on_output(i: int, out: torch.Tensor) -> None:
        records[i]["out_last"] = out[0, -1].detach()

    def part_pre(i: int, key: str):
        def hook(module, args, kwargs):
            x = args[0] if args else next(iter(kwargs.values()))
            records[i]["parts"][key] = x[0, -1].detach()
        return hook

    if layout is not None:
        for i, blk in enumerate(lm.blocks):
            for key in ("norm_mlp", "mlp", "post_attn", "post_mlp"):
                name = getattr(layout, key)
                if name is not None:
                    handles.append(getattr(blk, name).register_forward_pre_hook(part_pre(i, key), with_kwargs=True))
    ids = torch.as_tensor(list(token_ids), dtype=torch.long, device=lm.input_device)[None]
    try:
        with block_hooks(lm, on_input, on_output), torch.no_grad():
            lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False, logits_to_keep=1)
    finally:
        for h in handles:
            h.remove()
    return [LayerRecord(hidden=r["hidden"], out_last=r["out_last"], kwargs=r["kwargs"], parts=r["parts"])
            for r in records]
