"""Where a decoder block keeps its parts, and its attention / FFN weights in column-vector layout.

Matrices act on column vectors (``y = W x``). Weight layouts:

* GPT-2 uses ``Conv1D``: ``weight`` has shape ``[in, out]`` and ``y = x @ weight + bias``, so the
  column-vector matrix is ``weight.T``. The fused ``c_attn.weight`` is ``[D, 3D]``; its columns
  ``0:D``, ``D:2D`` and ``2D:3D`` are the query, key and value projections and, within each, columns
  ``h*dh:(h+1)*dh`` belong to head ``h`` (``dh = D / H``). ``c_proj.weight`` is ``[D, D]``; its rows
  ``h*dh:(h+1)*dh`` read head ``h``'s output.
* Llama / Gemma / Qwen2 / Mistral use ``nn.Linear``: ``weight`` is ``[out, in]`` (``y = W x + b``);
  ``q_proj`` has ``H*dh`` outputs, ``k_proj`` / ``v_proj`` have ``H_kv*dh`` (grouped-query attention:
  query head ``h`` reads key/value head ``h // (H / H_kv)``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from helpers import CompendiumError
from helpers.surrogates.algebra import t64


@dataclass
class AttnWeights:
    """Attention weights in column-vector layout (float64): ``q = wq x + bq`` etc.

    ``wq`` is ``[H*dh, D]``, ``wk`` / ``wv`` are ``[H_kv*dh, D]``, ``wo`` is ``[D, H*dh]``; head ``h``
    uses rows ``h*dh:(h+1)*dh`` of ``wq`` and columns ``h*dh:(h+1)*dh`` of ``wo``, and key/value head
    ``h // (H / H_kv)``. ``scaling`` is the model's softmax scale.
    """

    wq: torch.Tensor
    wk: torch.Tensor
    wv: torch.Tensor
    wo: torch.Tensor
    bq: torch.Tensor | None
    bk: torch.Tensor | None
    bv: torch.Tensor | None
    bo: torch.Tensor | None
    n_heads: int
    n_kv_heads: int
    head_dim: int
    scaling: float
    q_norm: nn.Module | None = None
    k_norm: nn.Module | None = None
    sliding_window: int | None = None


@dataclass
class FFNWeights:
    """FFN weights in column-vector layout (float64).

    Plain (GPT-2): ``y = w_out act(w_in u + b_in) + b_out``. Gated (Llama / Gemma):
    ``y = w_out (act(w_gate u + b_gate) * (w_in u + b_in)) + b_out`` with ``w_in`` = ``up_proj``.
    """

    w_in: torch.Tensor
    b_in: torch.Tensor | None
    w_out: torch.Tensor
    b_out: torch.Tensor | None
    act: Callable[[torch.Tensor], torch.Tensor]
    w_gate: torch.Tensor | None = None
    b_gate: torch.Tensor | None = None

    @property
    def gated(self) -> bool:
        """Whether the FFN is gated (SwiGLU / GeGLU)."""
        return self.w_gate is not None


def gpt2_attention_weights(attn: nn.Module) -> AttnWeights:
    """Split GPT-2's fused ``Conv1D`` ``c_attn`` (``[D, 3D]``, ``y = x @ W + b``) into column-vector q, k, v.

    Column-vector matrices are the transposes: ``wq = c_attn.weight[:, 0:D].T`` etc., and
    ``wo = c_proj.weight.T``. The softmax scale is the module's own (``1/sqrt(dh)``, optionally
    divided by ``layer_idx + 1``).
    """
    w = t64(attn.c_attn.weight)
    d = w.shape[0]
    if w.shape[1] != 3 * d:
        raise CompendiumError("GPT-2 construction needs self-attention with a fused c_attn of shape [D, 3D]")
    b = t64(attn.c_attn.bias)
    n_heads = int(attn.num_heads)
    return AttnWeights(
        wq=w[:, :d].T.contiguous(), wk=w[:, d:2 * d].T.contiguous(), wv=w[:, 2 * d:].T.contiguous(),
        wo=t64(attn.c_proj.weight).T.contiguous(),
        bq=b[:d], bk=b[d:2 * d], bv=b[2 * d:], bo=t64(attn.c_proj.bias),
        n_heads=n_heads, n_kv_heads=n_heads, head_dim=d // n_heads, scaling=float(attn.scaling),
    )


def projection_attention_weights(attn: nn.Module, config: object) -> AttnWeights:
    """q/k/v/o weights of a Llama / Gemma / Qwen2 / Mistral attention (``nn.Linear``, ``[out, in]``)."""
    n_heads = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_heads)
    head_dim = int(getattr(attn, "head_dim", 0) or config.hidden_size // n_heads)
    return AttnWeights(
        wq=t64(attn.q_proj.weight), wk=t64(attn.k_proj.weight), wv=t64(attn.v_proj.weight),
        wo=t64(attn.o_proj.weight),
        bq=t64(attn.q_proj.bias), bk=t64(attn.k_proj.bias), bv=t64(attn.v_proj.bias), bo=t64(attn.o_proj.bias),
        n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim, scaling=float(attn.scaling),
        q_norm=getattr(attn, "q_norm", None), k_norm=getattr(attn, "k_norm", None),
        sliding_window=getattr(attn, "sliding_window", None),
    )


def attention_weights(family: str, attn: nn.Module, config: object) -> AttnWeights:
    """The attention weights of a block of ``family``: GPT-2's fused ``Conv1D`` or separate projections."""
    return gpt2_attention_weights(attn) if family == "gpt2" else projection_attention_weights(attn, config)


def ffn_weights(mlp: nn.Module) -> FFNWeights:
    """FFN weights of a GPT-2 ``Conv1D`` MLP (``c_fc`` / ``c_proj``, transposed) or a gated one."""
    if hasattr(mlp, "c_fc"):
        return FFNWeights(w_in=t64(mlp.c_fc.weight).T.contiguous(), b_in=t64(mlp.c_fc.bias),
                          w_out=t64(mlp.c_proj.weight).T.contiguous(), b_out=t64(mlp.c_proj.bias), act=mlp.act)
    if hasattr(mlp, "gate_proj"):
        return FFNWeights(w_in=t64(mlp.up_proj.weight), b_in=t64(mlp.up_proj.bias),
                          w_out=t64(mlp.down_proj.weight), b_out=t64(mlp.down_proj.bias), act=mlp.act_fn,
                          w_gate=t64(mlp.gate_proj.weight), b_gate=t64(mlp.gate_proj.bias))
    raise CompendiumError(f"unknown FFN module {type(mlp).__name__}: extend helpers/surrogates/weights.ffn_weights")
