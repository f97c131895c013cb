"""One real forward pass on one sample: what every block call saw and produced (the surrogates' input).

The block call itself is captured with the project's one hook primitive, :func:`helpers.residual.hooks.hooks`
(its ``resid_pre`` point binds positional and keyword arguments with ``bind_block_call``); its ``inputs_of``
point records the real inputs of the block's FFN norm, FFN and post-norms at the current (last) token, which
the frozen constructions need.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from helpers.lm.families import family
from helpers.lm.load import LoadedModel
from helpers.residual.hooks import hooks


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

    :func:`helpers.residual.hooks.hooks` records every block's input and the arguments the model passes it
    (attention mask, position ids, rotary embeddings) and its output, and the real inputs of the block's FFN
    norm, FFN and post-norms at the current (last) token.
    """
    layout = row.layout if (row := family(lm.family)) else None
    records: list[dict] = [dict(parts={}) for _ in range(lm.n_layers)]

    def on_input(i: int, hidden: torch.Tensor, named: dict) -> None:
        records[i]["hidden"] = hidden[0].detach()
        records[i]["kwargs"] = named

    def on_output(i: int, out: torch.Tensor) -> None:
        records[i]["out_last"] = out[0, -1].detach()

    def part(key: str):
        def keep(i: int, x: torch.Tensor) -> None:
            records[i]["parts"][key] = x[0, -1].detach()

        return keep

    parts = {getattr(layout, key): part(key) for key in ("norm_mlp", "mlp", "post_attn", "post_mlp")
             if layout is not None and getattr(layout, key) is not None}
    ids = torch.as_tensor(list(token_ids), dtype=torch.long, device=lm.input_device)[None]
    with hooks(lm, resid_pre=on_input, resid_post=on_output, inputs_of=parts), torch.no_grad():
        lm.model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False, logits_to_keep=1)
    return [LayerRecord(hidden=r["hidden"], out_last=r["out_last"], kwargs=r["kwargs"], parts=r["parts"])
            for r in records]
