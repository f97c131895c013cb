"""Residual-stream capture with hooks.

Layer ``l < L`` is the *input* of block ``l`` (layer 0 = embeddings, after any embedding scaling the
model applies); layer ``L`` is the output of the last block *before* the final norm. Hugging Face's
``hidden_states[-1]`` is taken after the final norm, so it is not used here (see DESIGN.md, traps).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from helpers.models import LoadedModel


@dataclass
class Capture:
    """Residual states of one padded batch.

    ``states[l, b, t]`` is the residual state at layer ``l`` of token ``t`` of row ``b``;
    ``block_kwargs`` are the keyword arguments the model passed to its last block (attention mask,
    position ids, rotary embeddings), so the last block can be re-run exactly (Eq. 14).
    ``logits`` are the model's own logits when requested.
    """

    states: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    block_kwargs: dict
    logits: torch.Tensor | None = None


def pad_batch(
    rows: list[list[int]], pad_id: int = 0, device: str | torch.device = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token rows into ``(input_ids, attention_mask)``; real tokens keep positions 0..n-1."""
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("pad_batch needs a non-empty list of non-empty token rows")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids.to(device), mask.to(device)


def _first_tensor(args: tuple, kwargs: dict) -> torch.Tensor:
    return args[0] if args else kwargs["hidden_states"]


def capture_residuals(
    lm: LoadedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    keep_logits: bool = False,
) -> Capture:
    """Run the model once and return the residual stream at every layer (see module docstring).

    The states stay in the model's dtype; all layers are gathered on the input device (with
    ``device_map="auto"`` the blocks may live on several GPUs).
    """
    n = lm.n_layers
    states: list[torch.Tensor | None] = [None] * (n + 1)
    kwargs_store: dict = {}
    target = lm.input_device

    def pre_hook(index: int):
        def hook(module, args, kwargs):
            states[index] = _first_tensor(args, kwargs).detach()
            if index == n - 1:
                kwargs_store.update(kwargs)

        return hook

    def post_hook(module, args, kwargs, output):
        out = output[0] if isinstance(output, tuple) else output
        states[n] = out.detach()

    handles = [
        blk.register_forward_pre_hook(pre_hook(i), with_kwargs=True) for i, blk in enumerate(lm.blocks)
    ]
    handles.append(lm.blocks[n - 1].register_forward_hook(post_hook, with_kwargs=True))
    try:
        with torch.inference_mode():
            out = lm.model(
                input_ids=input_ids.to(target),
                attention_mask=attention_mask.to(target),
                use_cache=False,
                logits_to_keep=0 if keep_logits else 1,
            )
    finally:
        for h in handles:
            h.remove()
    kwargs_store.pop("past_key_values", None)
    kwargs_store.pop("layer_past", None)
    kwargs_store["use_cache"] = False
    stacked = torch.stack([s.to(target) for s in states])
    return Capture(
        states=stacked,
        input_ids=input_ids,
        attention_mask=attention_mask,
        block_kwargs=kwargs_store,
        logits=out.logits if keep_logits else None,
    )
