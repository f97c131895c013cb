"""The exact local Jacobian ``d z^(l+1)_n / d z^l_n`` of a real block call (the ``jacobian`` construction).

The real block (norms, biases, softmax, rotary embeddings all included) as a function of the current
token's input only, the other positions' keys and values held fixed at those of the real call.

Not an analogue of the paper's Table 2: in a pre-norm block the normalised input is scale-invariant,
so ``J z_n ~ z_n + (FFN term)`` by construction, and Proposition 1 on ``J`` measures a local stretch
along ``z_n``, not the block's finite change ``||f(z_n)||`` vs ``||z_n||``. It is reported only against
the real block (:func:`helpers.surrogates.report.agreement_table`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from helpers import CompendiumError
from helpers.surrogates.record import LayerRecord


class _PrefixCache:
    """A duck-typed KV cache for one attention layer.

    In recording mode (no prefix given) ``update`` stores the keys and values the layer computed and
    returns them unchanged; with a prefix it returns the prefix concatenated with the new ones, without
    mutating anything (safe under ``torch.func`` transforms).
    """

    def __init__(self, keys: torch.Tensor | None = None, values: torch.Tensor | None = None):
        self.keys, self.values = keys, values

    def update(self, key_states, value_states, *args, **kwargs):
        if self.keys is None:
            self.recorded = (key_states.detach(), value_states.detach())
            return key_states, value_states
        return torch.cat([self.keys, key_states], dim=-2), torch.cat([self.values, value_states], dim=-2)

    def get_seq_length(self, *args, **kwargs) -> int:
        return 0 if self.keys is None else int(self.keys.shape[-2])


_DROP_KWARGS = ("past_key_values", "past_key_value", "layer_past", "use_cache", "output_attentions")


def _last_token_kwargs(kwargs: dict, t: int) -> dict:
    """The block's keyword arguments restricted to a single query at the last position ``t - 1``."""
    out = {}
    for key, val in kwargs.items():
        if key in _DROP_KWARGS or val is None and key != "attention_mask":
            continue
        if key == "attention_mask" and isinstance(val, torch.Tensor):
            if val.dim() != 4:
                raise CompendiumError(f"unexpected attention mask of shape {tuple(val.shape)} in the block call")
            out[key] = val[:, :, t - 1:t, :t]
        elif key == "position_embeddings" and val is not None:
            out[key] = tuple(p[:, t - 1:t] for p in val)
        elif key in ("position_ids", "cache_position") and isinstance(val, torch.Tensor):
            out[key] = val[..., t - 1:t]
        elif isinstance(val, torch.Tensor) and val.dim() >= 2 and t > 1 and val.shape[-2] == t:
            raise CompendiumError(f"cannot restrict block argument '{key}' to one query: extend _last_token_kwargs")
        else:
            out[key] = val
    return out


@dataclass
class BlockStep:
    """The real block as a function of the current token's input only: ``x -> z^(l+1)_n``.

    The other positions' keys and values are recorded from a real call of the block on the whole
    sample (``_PrefixCache``) and held fixed; the block is then called on the single current token
    with that prefix and the model's own mask row, position ids and rotary embeddings. ``step(x)``
    maps [D] to [D]; ``step.batched(xs)`` maps [B, D] to [B, D] (B independent current tokens).
    """

    block: nn.Module
    keys: torch.Tensor
    values: torch.Tensor
    kwargs: dict

    def batched(self, xs: torch.Tensor) -> torch.Tensor:
        """Block outputs [B, D] for B alternative current-token inputs ``xs`` [B, D]."""
        b = xs.shape[0]
        cache = _PrefixCache(self.keys.expand(b, *self.keys.shape[1:]), self.values.expand(b, *self.values.shape[1:]))
        out = self.block(xs[:, None], past_key_values=cache, use_cache=True, **self.kwargs)
        out = out[0] if isinstance(out, tuple) else out
        return out[:, 0]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        cache = _PrefixCache(self.keys, self.values)
        out = self.block(x[None, None], past_key_values=cache, use_cache=True, **self.kwargs)
        out = out[0] if isinstance(out, tuple) else out
        return out[0, 0]


def block_step_function(block: nn.Module, record: LayerRecord) -> BlockStep:
    """Build the :class:`BlockStep` of ``block`` for the sample captured in ``record``."""
    hidden, kwargs = record.hidden, dict(record.kwargs)
    t = hidden.shape[0]
    base = {k: v for k, v in kwargs.items() if k not in _DROP_KWARGS}
    rec = _PrefixCache()
    with torch.no_grad():
        block(hidden[None], past_key_values=rec, use_cache=True, **base)
    keys, values = rec.recorded
    return BlockStep(block, keys[..., : t - 1, :], values[..., : t - 1, :], _last_token_kwargs(kwargs, t))


JACOBIAN_METHODS = ("batched", "jacrev")


def block_jacobian(block: nn.Module, record: LayerRecord, method: str = "batched") -> torch.Tensor:
    """Exact ``d z^(l+1)_n / d z^l_n`` [D, D] of the real block, the other positions' inputs held fixed.

    ``method="jacrev"`` uses ``torch.func.jacrev``; ``"batched"`` (default, ~10x faster on CPU because
    PyTorch has no vmap rule for the SDPA backward) runs the block once on D copies of the current token
    and back-propagates the diagonal, so that row ``j`` of the gradient is ``d y_j / d x``. Both are
    exact reverse-mode derivatives (a test checks they agree, and against finite differences).
    """
    if method not in JACOBIAN_METHODS:
        raise CompendiumError(f"unknown Jacobian method '{method}': choose from {JACOBIAN_METHODS}")
    step = block_step_function(block, record)
    x = record.hidden[-1].detach().clone()
    if method == "jacrev":
        return torch.func.jacrev(step)(x).detach()
    d = x.numel()
    with torch.enable_grad():
        xs = x.expand(d, d).clone().requires_grad_(True)
        out = step.batched(xs)
        (grad,) = torch.autograd.grad(out.diagonal().sum(), xs)
    return grad.detach()
