"""One token's state replaced, its context's keys and values cached from the clean pass.

The line search of the descent test (notebook 07) asks, for the current token ``n`` of a text: what is the loss
if its state at layer ``l`` were ``z`` instead of the model's own, everything else (the other positions' states,
hence their keys and values at every layer) unchanged? Re-running whole rows for every variant would cost the
row's length in tokens per variant; here every variant is one query:

- :class:`KeyValueCache` stands in for a transformers ``Cache`` for one block: the first call, on the clean states of
  every position, records the keys and values and stops (it needs nothing else); later calls return them.
- :class:`SpliceCache` returns, for each query row ``r``, the recorded keys and values of its source row with the
  query's own key and value written at its column ``cols[r]``: the query attends to its clean context and to
  itself as modified, exactly what a row cut after the token gives.
- :func:`query_kwargs` places the captured call arguments (mask rows, position ids, rotary tables) at the query
  columns.

:func:`predictor_losses` is the paper's inner loss (Eq. 14: last block, final norm, LM head) of a replaced state
with the prefix at that state's layer; :func:`continuation_losses` the final next-token loss after running the
rest of the real network from a replaced state. Both are exact: equal to the full re-run of a cut row (tests).
"""

from __future__ import annotations

import inspect
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from helpers.lm.load import LoadedModel
from helpers.residual.hooks import hooks

# the names under which a decoder block takes its KV cache (helpers.residual.hooks drops the same names)
CACHE_ARGS = ("past_key_values", "past_key_value", "layer_past")
# arguments of a block call with one entry per query position, and the axis of that position
PER_QUERY_ARGS = {"attention_mask": 2, "position_ids": 1, "position_embeddings": 1}


class KeysValuesOnly(Exception):
    """Raised by a recording cache once the keys and values of a block call are recorded."""


class KeyValueCache:
    """A one-layer stand-in for a transformers ``Cache``, for two calls of the same block.

    First call (every position): ``update`` records the keys and values (after rotary embeddings, before any
    grouped-query repetition) and stops the call, which needs nothing else. Second call (selected positions
    as queries, their states unchanged): ``update`` returns the recorded keys and values of every position
    instead of the queries' own (which are among them), so the queries attend to the whole prefix.
    """

    def __init__(self) -> None:
        self.keys_values: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        if self.keys_values is None:
            self.keys_values = (key_states, value_states)
            raise KeysValuesOnly
        return self.keys_values


class SpliceCache:
    """Recorded keys and values ``[S, H, T, d]`` served to one query per row: row ``r`` gets source row
    ``src[r]``'s, with its own (live) key and value written at column ``cols[r]``."""

    def __init__(self, keys_values: tuple[torch.Tensor, torch.Tensor], src: torch.Tensor, cols: torch.Tensor) -> None:
        self.keys_values, self.src, self.cols = keys_values, src, cols

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs):
        keys, values = (t[self.src.to(t.device)].clone() for t in self.keys_values)
        rows = torch.arange(len(self.src), device=keys.device)
        cols = self.cols.to(keys.device)
        keys[rows, :, cols] = key_states[:, :, 0].to(keys.dtype)
        values[rows, :, cols] = value_states[:, :, 0].to(values.dtype)
        return keys, values


def cache_arg(block: torch.nn.Module) -> str:
    """The name under which ``block`` takes its KV cache."""
    params = inspect.signature(block.forward).parameters
    return next((a for a in CACHE_ARGS if a in params), CACHE_ARGS[0])


def take_queries(value: torch.Tensor, qcols: torch.Tensor, dim: int) -> torch.Tensor:
    """``value`` (first axis the batch, 1 or B) with its position axis ``dim`` reduced to each row's query
    columns ``qcols`` [B, Q]."""
    batch, q = qcols.shape
    value = value.expand(batch, *value.shape[1:])
    view = [batch] + [1] * (value.ndim - 1)
    view[dim] = q
    size = list(value.shape)
    size[dim] = q
    return value.gather(dim, qcols.to(value.device).view(view).expand(size))


def query_kwargs(block_kwargs: dict, qcols: torch.Tensor, seq_len: int) -> dict:
    """A block's captured call arguments for the query columns ``qcols`` [B, Q] only: mask rows, position ids
    and rotary tables of those positions. SDPA passes no mask for a batch without padding (the mask is then
    purely causal): the causal rows are built instead. Other tensor arguments cannot be placed."""
    out = {}
    for name, value in block_kwargs.items():
        if name == "attention_mask" and value is None:
            keys = torch.arange(seq_len, device=qcols.device)
            value = (keys[None, None, None, :] <= qcols[:, None, :, None]).to(qcols.device)
        elif name in PER_QUERY_ARGS and value is not None:
            dim = PER_QUERY_ARGS[name]
            value = (tuple(take_queries(v, qcols, dim) for v in value) if isinstance(value, tuple | list)
                     else take_queries(value, qcols, dim))
        elif isinstance(value, torch.Tensor) or (isinstance(value, tuple | list)
                                                  and any(isinstance(v, torch.Tensor) for v in value)):
            raise NotImplementedError(f"block argument '{name}': no known query axis to select positions on")
        out[name] = value
    return out


def _rows_of(block_kwargs: dict, index: torch.Tensor) -> dict:
    """The per-row arguments of a block call (first axis B > 1) taken at rows ``index``; broadcast ones kept."""

    def pick(v):
        if isinstance(v, torch.Tensor) and v.ndim >= 2 and v.shape[0] > 1:
            return v[index.to(v.device)]
        return v

    return {k: (tuple(pick(x) for x in v) if isinstance(v, tuple | list) else pick(v))
            if k in PER_QUERY_ARGS else v for k, v in block_kwargs.items()}


def record_keys_values(lm: LoadedModel, index: int, states: torch.Tensor, kwargs: dict
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values ``[B, H, T, d]`` of block ``index`` for hidden ``states`` [B, T, D] under the call
    arguments ``kwargs`` (the call stops inside its attention, after the key and value projections)."""
    block = lm.blocks[index]
    cache = KeyValueCache()
    dev = next(block.parameters()).device
    try:
        block(states.to(dev), **kwargs, **{cache_arg(block): cache})
    except KeysValuesOnly:
        pass
    if cache.keys_values is None:
        raise NotImplementedError(f"{type(block).__name__} does not pass its keys and values to its cache")
    return cache.keys_values


def query_block(lm: LoadedModel, index: int, h: torch.Tensor, keys_values: tuple[torch.Tensor, torch.Tensor],
                kv_rows: torch.Tensor, cols: torch.Tensor, kwargs: dict, kw_rows: torch.Tensor) -> torch.Tensor:
    """Block ``index`` on one query per row: state ``h[r]`` [R, D] at column ``cols[r]``, attending to the
    recorded keys and values of row ``kv_rows[r]`` (:class:`SpliceCache`) under the call arguments of row
    ``kw_rows[r]`` of ``kwargs`` (the batch the keys and values came from). Returns the block's output [R, D]."""
    seq_len = keys_values[0].shape[2]
    block = lm.blocks[index]
    dev = next(block.parameters()).device
    qk = query_kwargs(_rows_of(kwargs, kw_rows), cols.to(dev)[:, None], seq_len)
    cache = SpliceCache(keys_values, kv_rows, cols)
    return lm.call_block(index, h[:, None, :].to(dev), {**qk, cache_arg(block): cache})[:, 0]


def stacked_keys_values(lm: LoadedModel, index: int, states: torch.Tensor, kwargs: dict
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Keys and values of block ``index`` for a stack of prefix states ``states`` [K, B, T, D] (e.g. the last
    block on the states of K layers, Eq. 14), concatenated: stack ``k``'s row ``b`` is row ``k * B + b``."""
    with torch.inference_mode():
        parts = [record_keys_values(lm, index, x, kwargs) for x in states]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def block_keys_values(lm: LoadedModel, states: torch.Tensor, layer_kwargs: list[dict]
                      ) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Every block's keys and values in the clean pass: block ``j``'s from ``states[j]`` under its own call
    arguments (``layer_kwargs``, :func:`helpers.residual.hooks.capture_residuals` with ``every_block``)."""
    with torch.inference_mode():
        return [record_keys_values(lm, j, states[j], layer_kwargs[j]) for j in range(lm.n_layers)]


def _grad_mode(grad: bool):
    return torch.inference_mode(False) if grad else torch.inference_mode()


def predictor_losses(lm: LoadedModel, keys_values: tuple[torch.Tensor, torch.Tensor], kwargs: dict,
                     kv_rows: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, current: torch.Tensor,
                     targets: torch.Tensor, grad: bool = False, chunk: int = 256
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The Eq. 14 inner loss [R] of replaced states, and with ``grad`` its gradient [R, D] with respect to them.

    Variant ``r`` puts ``current[r]`` at column ``cols[r]`` of a prefix whose last-block keys and values are row
    ``kv_rows[r]`` of ``keys_values`` (:func:`stacked_keys_values`; the call arguments are row ``rows[r]`` of
    ``kwargs``, the last block's), runs the last block, final norm and LM head, and scores ``targets[r]``. With
    ``current`` the prefix's own state it equals :func:`helpers.residual.lens.inner_losses`; the gradient is
    :func:`helpers.residual.lens.inner_loss_grad`'s (the prefix held fixed)."""
    last = lm.n_layers - 1
    loss = torch.empty(len(rows), dtype=torch.promote_types(current.dtype, torch.float32))
    grads = torch.empty_like(current, dtype=loss.dtype) if grad else None
    with _grad_mode(grad), torch.set_grad_enabled(grad):
        for s in range(0, len(rows), chunk):
            sl = slice(s, s + chunk)
            x = current[sl].detach().clone().requires_grad_(grad)
            y = query_block(lm, last, x, keys_values, kv_rows[sl], cols[sl], kwargs, rows[sl])
            logits = lm.logits(y)
            ce = F.cross_entropy(logits.to(loss.dtype), targets[sl].to(logits.device), reduction="none")
            if grad:
                (g,) = torch.autograd.grad(ce.sum(), x)
                grads[sl] = g.to(grads.dtype).cpu()
            loss[sl] = ce.detach().cpu()
    return loss, grads


def _edit_rows(scale: torch.Tensor | None, shift: torch.Tensor | None):
    """An ``attn_out`` hook replacing row ``r`` of the update ``u`` by ``scale[r] * u + shift[r]``."""

    def edit(_, out):
        rows = [out.shape[0]] + [1] * (out.dim() - 1)
        if scale is not None:
            out = out * scale.to(out.device, out.dtype).view(rows)
        if shift is not None:
            out = out + shift.to(out.device, out.dtype).view(out.shape[0], *([1] * (out.dim() - 2)), -1)
        return out

    return edit


def _rest_of_network(lm: LoadedModel, block_kv: list[tuple[torch.Tensor, torch.Tensor]], layer_kwargs: list[dict],
                     start: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, h: torch.Tensor, chunk: int,
                     update_scale: torch.Tensor | None, update_shift: torch.Tensor | None) -> torch.Tensor:
    """The states [R, D] after the last block when row ``r`` enters block ``start[r]`` with ``h[r]`` (the
    attention update of block ``start[r]`` edited as :func:`_edit_rows`); differentiable in ``h``."""
    edited = update_scale is not None or update_shift is not None
    h = h.to(lm.input_device)  # the caller's states may be on the CPU (notebook 07): the path runs on the model's device
    for j in range(int(start.min()) if len(start) else lm.n_layers, lm.n_layers):
        active = (start <= j).nonzero().flatten()
        for s in range(0, len(active), chunk):
            a = active[s : s + chunk]
            first = start[a] == j
            edit = None
            if edited and bool(first.any()):
                scale = None if update_scale is None else torch.where(first, update_scale[a].to(h.dtype), 1.0)
                shift = None if update_shift is None else update_shift[a].to(h.dtype) * first[:, None]
                edit = _edit_rows(scale, shift)
            with hooks(lm, [j], attn_out=edit) if edit is not None else nullcontext():
                new = query_block(lm, j, h[a], block_kv[j], rows[a], cols[a], layer_kwargs[j], rows[a])
            h = h.index_put((a.to(h.device),), new.to(h.device, h.dtype))
    return h


def _head_losses(lm: LoadedModel, h: torch.Tensor, targets: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    logits = lm.logits(h).to(dtype)
    return F.cross_entropy(logits, targets.to(logits.device), reduction="none")


def continuation_losses(lm: LoadedModel, block_kv: list[tuple[torch.Tensor, torch.Tensor]], layer_kwargs: list[dict],
                        start: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, current: torch.Tensor,
                        targets: torch.Tensor, chunk: int = 256, update_scale: torch.Tensor | None = None,
                        update_shift: torch.Tensor | None = None) -> torch.Tensor:
    """The model's final next-token loss [R] when token ``(rows[r], cols[r])`` enters block ``start[r]`` with
    state ``current[r]`` and runs the rest of the real network (blocks ``start[r]..L-1``, final norm, LM head),
    every other position's keys and values at every layer those of the clean pass (:func:`block_keys_values`).
    ``start[r] = L`` scores ``current[r]`` with the head alone. With ``current`` the clean state it equals the
    model's own loss. In block ``start[r]`` the attention half-step's update ``u`` (the ``attn_out`` point of
    :func:`helpers.residual.hooks.hooks`) becomes ``update_scale[r] * u + update_shift[r]`` where these are given
    (scale 1 and shift 0 otherwise)."""
    dtype = torch.promote_types(current.dtype, torch.float32)
    out = torch.empty(len(rows), dtype=dtype)
    with torch.inference_mode():
        h = _rest_of_network(lm, block_kv, layer_kwargs, start, rows, cols, current.clone(), chunk, update_scale,
                             update_shift)
        for s in range(0, len(rows), chunk):
            out[s : s + chunk] = _head_losses(lm, h[s : s + chunk], targets[s : s + chunk], dtype).cpu()
    return out


def continuation_grads(lm: LoadedModel, block_kv: list[tuple[torch.Tensor, torch.Tensor]], layer_kwargs: list[dict],
                       start: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, current: torch.Tensor,
                       targets: torch.Tensor, chunk: int = 64, update_scale: torch.Tensor | None = None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`continuation_losses` [R] and its gradient [R, D] with respect to ``current``: the slope of the rest
    of the network at the state it starts from. With ``start[r] = l + 1`` and ``current[r] = z_l`` that is
    ``grad f_{l+1}(z_l)``, the true loss's slope at the start of block ``l``'s step; with ``start[r] = l``,
    ``update_scale[r] = 0`` and ``current[r] = z_l``, the slope at the start of its attention half-step (the
    scaled update contributes nothing, so the derivative is the rest's after the attention update)."""
    dtype = torch.promote_types(current.dtype, torch.float32)
    loss, grads = torch.empty(len(rows), dtype=dtype), torch.empty(current.shape, dtype=dtype)
    with torch.inference_mode(False), torch.enable_grad():
        for s in range(0, len(rows), chunk):
            sl = slice(s, s + chunk)
            x = current[sl].detach().clone().requires_grad_(True)
            scale = None if update_scale is None else update_scale[sl]
            h = _rest_of_network(lm, block_kv, layer_kwargs, start[sl], rows[sl], cols[sl], x, chunk, scale, None)
            ce = _head_losses(lm, h, targets[sl], dtype)
            (g,) = torch.autograd.grad(ce.sum(), x)
            loss[sl], grads[sl] = ce.detach().cpu(), g.to(dtype).cpu()
    return loss, grads


def path_grads(lm: LoadedModel, block_kv: list[tuple[torch.Tensor, torch.Tensor]], layer_kwargs: list[dict],
               rows: torch.Tensor, cols: torch.Tensor, embedded: torch.Tensor, targets: torch.Tensor,
               halfsteps: bool = False, chunk: int = 128) -> dict[str, torch.Tensor]:
    """The true next-token loss's gradient with respect to the token's own state at every layer, through the
    rest of the real network: ``loss`` [R], ``grads`` [R, L, D] at each block's input, ``final_grad`` [R, D] at the
    last block's output (the final norm and head alone) and, with ``halfsteps``
    (:func:`helpers.lm.families.halfstep_module`), ``mid_grads`` [R, L, D] after each attention half-step.

    The token's path runs from its layer-0 state ``embedded`` [R, D] through every block as one query with the
    clean keys and values of the other positions (:func:`block_keys_values`): a state of position ``n`` reaches
    no earlier position and no later position reaches ``L_n``, so this is exactly ``dL_n / dz_n^l``
    (:func:`helpers.residual.pertoken.per_token_grads`, one backward per token)."""
    n = lm.n_layers
    dtype = torch.promote_types(embedded.dtype, torch.float32)
    out = {"loss": torch.empty(len(rows), dtype=dtype), "grads": torch.empty((len(rows), n, embedded.shape[-1]), dtype=dtype),
           "final_grad": torch.empty((len(rows), embedded.shape[-1]), dtype=dtype)}
    if halfsteps:
        out["mid_grads"] = torch.empty_like(out["grads"])
    with torch.inference_mode(False), torch.enable_grad():
        for s in range(0, len(rows), chunk):
            sl = slice(s, s + chunk)
            h, states, mids = embedded[sl].detach().clone(), [], []
            with hooks(lm, resid_mid=(lambda _, x, mids=mids: mids.append(x)) if halfsteps else None):
                for j in range(n):
                    h = h.detach().requires_grad_(True) if j == 0 else h
                    states.append(h)
                    h = query_block(lm, j, h, block_kv[j], rows[sl], cols[sl], layer_kwargs[j], rows[sl])
            ce = _head_losses(lm, h, targets[sl], dtype)
            grads = torch.autograd.grad(ce.sum(), [*states, h, *mids])
            out["loss"][sl] = ce.detach().cpu()
            # each gradient on the CPU before stacking: the first state is where the caller keeps it (the CPU in
            # notebook 07), the others on their blocks' devices (one GPU, or several with device_map="auto")
            out["grads"][sl] = torch.stack([g.to(dtype).cpu() for g in grads[:n]], dim=1)
            out["final_grad"][sl] = grads[n].to(dtype).cpu()
            if halfsteps:
                out["mid_grads"][sl] = torch.stack([g.reshape(h.shape).to(dtype).cpu() for g in grads[n + 1:]], dim=1)
    return out
