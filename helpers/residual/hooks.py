"""Residual-stream capture with hooks.

Layer ``l < L`` is the *input* of block ``l`` (layer 0 = embeddings, after any embedding scaling the
model applies); layer ``L`` is the output of the last block *before* the final norm. Hugging Face's
``hidden_states[-1]`` is taken after the final norm, so it is not used here (ARCHITECTURE.md, traps).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from helpers.lm.families import attn_update_module, halfstep_module
from helpers.lm.load import LoadedModel

# Arguments of a block call that refer to the model's own KV cache or output options: a block re-run
# on other states must not read or write the cache of the real call.
_DROP_ARGS = ("past_key_values", "past_key_value", "layer_past", "use_cache", "output_attentions")


@dataclass
class Capture:
    """Residual states of one padded batch.

    ``states[l, b, t]`` is the residual state at layer ``l`` of token ``t`` of row ``b``;
    ``block_kwargs`` are all other arguments of the real call of the last block, by name (attention mask,
    position ids, rotary embeddings), so the last block can be re-run exactly (Eq. 14); ``layer_kwargs[l]``
    (when asked for) the same for every block ``l`` (layer types differ: Gemma 3's local and global layers).
    """

    states: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    block_kwargs: dict
    layer_kwargs: list[dict] | None = None


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


def bind_block_call(block: nn.Module, args: tuple, kwargs: dict) -> tuple[torch.Tensor, dict]:
    """Split one real call of a decoder block into its hidden-state input and every other argument by name.

    Positional and keyword arguments are bound to the block's ``forward`` signature: some families pass
    the attention mask positionally (GPT-2 in transformers 5.x), and a block re-run without it attends
    both ways under eager attention. Cache arguments are dropped and ``use_cache`` is set to False, so
    ``block(hidden, **named)`` re-runs the call exactly, on any hidden states of the same shape.
    """
    sig = inspect.signature(block.forward)
    bound = sig.bind(*args, **kwargs)
    named: dict = {}
    for name, value in bound.arguments.items():
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            named.update(value)
        elif kind is inspect.Parameter.VAR_POSITIONAL:
            if value:
                raise TypeError(f"{type(block).__name__} takes *{name}: cannot name its arguments")
        else:
            named[name] = value
    first = next(iter(sig.parameters))
    hidden = named.pop(first)
    for name in _DROP_ARGS:
        named.pop(name, None)
    if "use_cache" in sig.parameters or any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()
    ):
        named["use_cache"] = False
    return hidden, named


def first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The first input of a module call, passed positionally or by keyword (the one place that knows how)."""
    return args[0] if args else next(iter(kwargs.values()))


def _replace_first(output, new: torch.Tensor):
    return (new, *output[1:]) if isinstance(output, tuple) else new


@contextmanager
def hooks(lm: LoadedModel, layers: list[int] | None = None, *,
          resid_pre: Callable[[int, torch.Tensor, dict], torch.Tensor | None] | None = None,
          resid_mid: Callable[[int, torch.Tensor], None] | None = None,
          resid_post: Callable[[int, torch.Tensor], None] | None = None,
          attn_out: Callable[[int, torch.Tensor], torch.Tensor | None] | None = None,
          inputs_of: dict[str, Callable[[int, torch.Tensor], None]] | None = None) -> Iterator[None]:
    """The one hook primitive: named points of every decoder block ``l`` (or those in ``layers``), removed on exit.

    - ``resid_pre(l, hidden, named)``: before block ``l``, its real call bound to the block's signature
      (:func:`bind_block_call`: the hidden state and every other argument by name); a tensor it returns replaces
      the block's input (a splice), None leaves the call as it is;
    - ``resid_mid(l, x)``: the state after block ``l``'s attention half-step, as the block's pre-FFN module
      (:func:`helpers.lm.families.halfstep_module`) receives it; nothing is hooked where a block has no such state
      (parallel residual, post-norm OPT), and OPT's module sees it flattened to ``[B*T, D]``;
    - ``resid_post(l, out)``: block ``l``'s output (its first element);
    - ``attn_out(l, out)``: the output of the module whose output is the attention half-step's update
      (:func:`helpers.lm.families.attn_update_module`); a tensor it returns replaces it (scaling the update);
    - ``inputs_of``: ``{submodule name: fn(l, x)}``, the first input of that submodule of each block (the block
      layouts of the linear surrogates).

    Every capture, splice and surrogate in the package goes through this context manager.
    """
    handles = []
    config = lm.model.config

    def pre(i: int):
        def hook(module, args, kwargs):
            hidden, named = bind_block_call(module, args, kwargs)
            new = resid_pre(i, hidden, named)
            if new is None:
                return None
            if args:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, next(iter(inspect.signature(module.forward).parameters)): new}

        return hook

    def post(i: int):
        def hook(module, args, kwargs, output):
            resid_post(i, output[0] if isinstance(output, tuple) else output)

        return hook

    def module_input(i: int, fn):
        def hook(module, args, kwargs):
            fn(i, first_input(args, kwargs))

        return hook

    def update(i: int):
        def hook(module, args, output):
            new = attn_out(i, output[0] if isinstance(output, tuple) else output)
            return None if new is None else _replace_first(output, new)

        return hook

    mid = halfstep_module(lm.family, config) if resid_mid is not None else None
    attn = attn_update_module(lm.family, config) if attn_out is not None else None
    if attn_out is not None and attn is None:
        raise ValueError(f"family {lm.family} has no attention half-step update to hook (attn_out)")
    try:
        for i in layers if layers is not None else range(lm.n_layers):
            blk = lm.blocks[i]
            if resid_pre is not None:
                handles.append(blk.register_forward_pre_hook(pre(i), with_kwargs=True))
            if resid_post is not None:
                handles.append(blk.register_forward_hook(post(i), with_kwargs=True))
            if mid is not None:
                handles.append(getattr(blk, mid).register_forward_pre_hook(module_input(i, resid_mid), with_kwargs=True))
            if attn is not None:
                handles.append(getattr(blk, attn).register_forward_hook(update(i)))
            for name, fn in (inputs_of or {}).items():
                handles.append(getattr(blk, name).register_forward_pre_hook(module_input(i, fn), with_kwargs=True))
        yield
    finally:
        for h in handles:
            h.remove()


def capture_residuals(
    lm: LoadedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    every_block: bool = False,
) -> Capture:
    """Run the model once and return the residual stream at every layer (see module docstring).

    The states stay in the model's dtype; all layers are gathered on the input device (with
    ``device_map="auto"`` the blocks may live on several GPUs). ``every_block`` keeps every block's call
    arguments (``Capture.layer_kwargs``), not only the last block's.
    """
    n = lm.n_layers
    states: list[torch.Tensor | None] = [None] * (n + 1)
    kwargs_store: dict = {}
    every: list[dict] = [{} for _ in range(n)]
    target = lm.input_device

    def on_input(index: int, hidden: torch.Tensor, named: dict) -> None:
        states[index] = hidden.detach()
        if every_block:
            every[index] = dict(named)
        if index == n - 1:
            kwargs_store.update(named)

    def on_output(index: int, out: torch.Tensor) -> None:
        states[n] = out.detach()

    with hooks(lm, resid_pre=on_input), hooks(lm, [n - 1], resid_post=on_output), torch.inference_mode():
        lm.model(
            input_ids=input_ids.to(target),
            attention_mask=attention_mask.to(target),
            use_cache=False,
            logits_to_keep=1,
        )
    stacked = torch.stack([s.to(target) for s in states])
    return Capture(
        states=stacked,
        input_ids=input_ids,
        attention_mask=attention_mask,
        block_kwargs=kwargs_store,
        layer_kwargs=every if every_block else None,
    )




def capture_halfsteps(lm: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                      every_block: bool = False) -> tuple[Capture, torch.Tensor | None]:
    """One model call: the residual capture (states ``[L+1, B, T, D]``, last block's call arguments) and the
    states after every attention half-step ``[L, B, T, D]`` (``None`` without half-steps), from the
    ``resid_mid`` point of :func:`hooks` (OPT's module sees them flattened to ``[B*T, D]``)."""
    store: dict[int, torch.Tensor] = {}
    with hooks(lm, resid_mid=lambda i, x: store.__setitem__(i, x)):
        cap = capture_residuals(lm, input_ids, attention_mask, every_block)
    if not store:  # the block has no half-step state (hooks() registered no resid_mid)
        return cap, None
    shape = cap.states.shape[1:]
    return cap, torch.stack([store[i].detach().reshape(shape).to(cap.states.device) for i in range(lm.n_layers)])
