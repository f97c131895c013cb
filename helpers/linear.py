"""Linear surrogates of decoder blocks and the eigenvalue condition (Eq. 10-12, Proposition 1, Table 2).

The paper explains the growing norm of the current token's representation with a *linear* surrogate
of each block applied to the current token ``x = z_n`` (the last token of the context, input of the
layer)::

    W_MHSA   = sum_h sum_i W_O^h W_V^h z_i z_i^T (W_K^h)^T W_Q^h      (Eq. 10, linear attention)
    W_FFN    = W_2 W_1                                                  (Eq. 11, activation removed)
    W_linear = (I + W_FFN)(I + W_MHSA)                                  (Eq. 12)

and Proposition 1: with ``W^T W = U Lambda U^-1``, ``a = U^T x`` and ``b = U^-1 x``,
``sum_i lambda_i a_i b_i >= sum_i a_i b_i`` implies ``||W x|| >= ||x||``. ``W^T W`` is symmetric, so
``U`` is orthogonal, ``a = b`` and the two sides are exactly ``||W x||^2`` and ``||x||^2``: the
condition *is* the direct check. We compute both (``b`` with a linear solve, not ``U^T``) so that a
test can confirm they agree numerically.

Matrices act on column vectors (``y = W x``). Weight layouts:

* GPT-2 uses ``Conv1D``: ``weight`` has shape ``[in, out]`` and ``y = x @ weight + bias``, so the
  column-vector matrix is ``weight.T``. The fused ``c_attn.weight`` is ``[D, 3D]``; its columns
  ``0:D``, ``D:2D`` and ``2D:3D`` are the query, key and value projections and, within each, columns
  ``h*dh:(h+1)*dh`` belong to head ``h`` (``dh = D / H``). ``c_proj.weight`` is ``[D, D]``; its rows
  ``h*dh:(h+1)*dh`` read head ``h``'s output.
* Llama / Gemma / Qwen2 / Mistral use ``nn.Linear``: ``weight`` is ``[out, in]`` (``y = W x + b``);
  ``q_proj`` has ``H*dh`` outputs, ``k_proj`` / ``v_proj`` have ``H_kv*dh`` (grouped-query attention:
  query head ``h`` reads key/value head ``h // (H / H_kv)``).

Three constructions per block and token (``CONSTRUCTIONS``):

* ``linear`` -- the paper's Eq. 12 (plain FFN only: a gated FFN has no linear form once the activation
  is removed, which is why the paper skipped LLaMA).
* ``frozen`` -- beyond the paper: the FFN linearised with its activation frozen at the current token,
  ``W_down diag(act(W_gate u_n)) W_up`` for gated FFNs (SwiGLU / GeGLU) and
  ``W_2 diag(act(p_n) / p_n) W_1`` (``p_n = W_1 u_n + b_1``) for plain ones; ``u_n`` is the real FFN
  input of the current token. Either reproduces the real FFN output at ``u_n`` exactly. Attention is
  the same linear attention as in ``linear``.
* ``jacobian`` -- beyond the paper: the exact local Jacobian ``d z^(l+1)_n / d z^l_n`` of the real
  block call (LayerNorm, biases, softmax, rotary embeddings all included), the other positions'
  inputs held fixed.

What the paper omits is an explicit option (:class:`SurrogateOptions`), so its effect can be seen:
LayerNorm / RMSNorm (frozen at the current token when included; context tokens go through the real
norm), biases (the surrogate becomes affine ``W x + c`` and Proposition 1 is applied to the
homogeneous ``(D+1) x (D+1)`` matrix ``[[W, c], [0, 1]]`` on ``[x; 1]``, whose verdict is that of
``||W x + c|| >= ||x||``), the softmax scale, and rotary position embeddings (Llama / Gemma).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from helpers import CompendiumError
from helpers.capture import block_hooks
from helpers.models import LoadedModel

CONSTRUCTIONS = ("linear", "frozen", "jacobian")
PAPER_TABLE2 = {"wikitext-103": 100.0, "1bw": 100.0}
"""Table 2: share (%) of GPT-2's constructed matrices that meet Proposition 1's condition."""

def profile_layers(n_layers: int, stride: int) -> list[int]:
    """Every ``stride``-th block index, the last block always included."""
    return sorted(set(range(0, n_layers, max(1, stride))) | {n_layers - 1})


TIE_RTOL = 1e-9
"""Relative tolerance under which ``||W x||^2`` and ``||x||^2`` count as a tie (verdict 0)."""


# --------------------------------------------------------------------------- options and layouts


@dataclass(frozen=True)
class SurrogateOptions:
    """What the linear surrogate includes; the defaults are the paper's omissions (all ``False``).

    ``layernorm``: include the block's norms, frozen at the current token (``N(x) ~ A x``, exact at
    ``z_n``), and pass the context through the real norms. ``bias``: keep biases and norm offsets
    (affine surrogate). ``scale``: multiply attention scores by the model's softmax scale
    (``1/sqrt(d_head)`` for GPT-2 / Llama). ``rotary``: rotate queries and keys by the real rotary
    embeddings of their positions (families that use them; ignored otherwise).
    """

    layernorm: bool = False
    bias: bool = False
    scale: bool = False
    rotary: bool = False

    def label(self) -> str:
        """Short text naming what is included, e.g. ``paper (all omitted)`` or ``+layernorm+bias``."""
        on = [k for k in ("layernorm", "bias", "scale", "rotary") if getattr(self, k)]
        return "paper (all omitted)" if not on else "+" + "+".join(on)


OPTION_VARIANTS = (
    SurrogateOptions(),
    SurrogateOptions(layernorm=True),
    SurrogateOptions(bias=True),
    SurrogateOptions(scale=True),
    SurrogateOptions(rotary=True),
    SurrogateOptions(layernorm=True, bias=True, scale=True, rotary=True),
)
"""The paper's surrogate, each omission undone alone, and all undone together."""


@dataclass(frozen=True)
class BlockLayout:
    """Attribute names of a decoder block's parts (``None`` where the family has no such part)."""

    attn: str
    mlp: str
    norm_attn: str
    norm_mlp: str
    post_attn: str | None = None
    post_mlp: str | None = None


_LLAMA_LAYOUT = BlockLayout("self_attn", "mlp", "input_layernorm", "post_attention_layernorm")
_GEMMA_LAYOUT = BlockLayout("self_attn", "mlp", "input_layernorm", "pre_feedforward_layernorm",
                            "post_attention_layernorm", "post_feedforward_layernorm")
LAYOUTS: dict[str, BlockLayout] = {
    "gpt2": BlockLayout("attn", "mlp", "ln_1", "ln_2"),
    "llama": _LLAMA_LAYOUT,
    "mistral": _LLAMA_LAYOUT,
    "qwen2": _LLAMA_LAYOUT,
    "gemma3_text": _GEMMA_LAYOUT,
    "gemma3": _GEMMA_LAYOUT,
    "gemma2": _GEMMA_LAYOUT,
}


def block_layout(family: str) -> BlockLayout:
    """The :class:`BlockLayout` of a model family; :class:`CompendiumError` if it has no surrogate."""
    if family not in LAYOUTS:
        raise CompendiumError(
            f"no linear surrogate for model family '{family}': supported are {', '.join(sorted(LAYOUTS))}; "
            f"add its block layout to helpers/linear.py LAYOUTS"
        )
    return LAYOUTS[family]


# --------------------------------------------------------------------------- linear algebra


def gram_eigh(w: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of ``W^T W`` in float64 with a symmetric solver: ``(lambda ascending, U)``."""
    w64 = _np64(w)
    with _blas_single_thread():
        gram = w64.T @ w64
        gram = 0.5 * (gram + gram.T)
        lam, u = np.linalg.eigh(gram)
    return lam, u


def _blas_single_thread():
    """Limit numpy's BLAS to one thread: on a shared, busy CPU a multi-threaded ``eigh`` of a few
    hundred rows can be 20-80x slower than a single-threaded one (threadpoolctl when installed)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - optional
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")


def prop1_quantities(lam: np.ndarray, u: np.ndarray, x: np.ndarray | torch.Tensor) -> dict[str, np.ndarray | float]:
    """Proposition 1's quantities for ``W^T W = U diag(lam) U^-1`` and the vector ``x``.

    Returns ``a = U^T x``, ``b = U^-1 x`` (a linear solve, not ``U^T``), ``lhs = sum lam_i a_i b_i``
    and ``rhs = sum a_i b_i``. The condition is ``lhs >= rhs``.
    """
    x64 = _np64(x).reshape(-1)
    with _blas_single_thread():
        a = u.T @ x64
        b = np.linalg.solve(u, x64)
    return {"a": a, "b": b, "lhs": float(np.sum(lam * a * b)), "rhs": float(np.sum(a * b))}


def compare(lhs: float, rhs: float, rtol: float = TIE_RTOL) -> int:
    """``+1`` if ``lhs > rhs``, ``-1`` if ``lhs < rhs``, ``0`` if they tie within ``rtol * max(|lhs|, |rhs|)``."""
    tol = rtol * max(abs(lhs), abs(rhs))
    if abs(lhs - rhs) <= tol:
        return 0
    return 1 if lhs > rhs else -1


def prop1_verdict(lam: np.ndarray, u: np.ndarray, x: np.ndarray | torch.Tensor, rtol: float = TIE_RTOL) -> int:
    """Proposition 1's verdict on ``x``: ``+1`` the condition holds strictly, ``0`` tie, ``-1`` it fails."""
    q = prop1_quantities(lam, u, x)
    return compare(q["lhs"], q["rhs"], rtol)


def direct_verdict(w: np.ndarray | torch.Tensor, x: np.ndarray | torch.Tensor, rtol: float = TIE_RTOL) -> int:
    """The direct check in float64: ``+1`` if ``||W x||^2 > ||x||^2``, ``0`` tie, ``-1`` otherwise."""
    w64, x64 = _np64(w), _np64(x).reshape(-1)
    return compare(float(np.sum((w64 @ x64) ** 2)), float(np.sum(x64**2)), rtol)


def augment(w: np.ndarray | torch.Tensor, c: np.ndarray | torch.Tensor | None) -> np.ndarray:
    """Homogeneous matrix ``[[W, c], [0, 1]]`` of the affine map ``x -> W x + c`` (float64).

    ``||[[W, c], [0, 1]] [x; 1]||^2 = ||W x + c||^2 + 1`` against ``||x||^2 + 1``: same verdict as the
    affine direct check. With ``c = None`` returns ``W`` unchanged (float64).
    """
    w64 = _np64(w)
    if c is None:
        return w64
    d_out, d_in = w64.shape
    out = np.zeros((d_out + 1, d_in + 1))
    out[:d_out, :d_in] = w64
    out[:d_out, d_in] = _np64(c).reshape(-1)
    out[d_out, d_in] = 1.0
    return out


def homogeneous(x: np.ndarray | torch.Tensor, with_one: bool) -> np.ndarray:
    """``[x; 1]`` when ``with_one`` (for an augmented matrix), else ``x`` (float64)."""
    x64 = _np64(x).reshape(-1)
    return np.concatenate([x64, [1.0]]) if with_one else x64


def _np64(a: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().to("cpu", torch.float64).numpy()
    return np.asarray(a, dtype=np.float64)


# --------------------------------------------------------------------------- affine maps (torch, float64)


@dataclass
class Affine:
    """The map ``x -> A x + c`` (``c`` may be ``None`` for a linear map); float64 tensors."""

    a: torch.Tensor
    c: torch.Tensor | None = None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a @ x
        return y if self.c is None else y + self.c

    def then(self, outer: Affine) -> Affine:
        """``outer o self``: first this map, then ``outer``."""
        a = outer.a @ self.a
        if self.c is None and outer.c is None:
            return Affine(a)
        c = outer.a @ self.c if self.c is not None else torch.zeros(a.shape[0], dtype=a.dtype)
        return Affine(a, c if outer.c is None else c + outer.c)

    def residual(self) -> Affine:
        """``x -> x + (A x + c)``, the map with its residual connection, ``I + A``."""
        return Affine(torch.eye(self.a.shape[0], dtype=self.a.dtype) + self.a, self.c)


def identity(d: int) -> Affine:
    """The identity map on ``R^d``."""
    return Affine(torch.eye(d, dtype=torch.float64))


def _t64(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().to("cpu", torch.float64)


def frozen_norm(module: nn.Module, x: torch.Tensor, bias: bool = True) -> Affine:
    """The norm ``module`` frozen at ``x`` (1-D): an affine map ``A x' + c`` with ``A x + c == module(x)``.

    LayerNorm: ``A = diag(gamma) (I - 11^T/D) / sqrt(var(x) + eps)``, ``c = beta``. RMSNorm (Llama):
    ``A = diag(w) / rms(x)``; Gemma's RMSNorm scales by ``1 + w``. ``bias=False`` drops ``c``.
    """
    x64 = _t64(x).reshape(-1)
    d = x64.numel()
    name = type(module).__name__
    if isinstance(module, nn.LayerNorm):
        centre = torch.eye(d, dtype=torch.float64) - 1.0 / d
        var = x64.var(unbiased=False)
        gamma = _t64(module.weight) if module.weight is not None else torch.ones(d, dtype=torch.float64)
        a = gamma[:, None] * centre / torch.sqrt(var + module.eps)
        c = _t64(module.bias) if (bias and module.bias is not None) else None
        return Affine(a, c)
    if "RMSNorm" in name:
        eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
        if eps is None:
            raise CompendiumError(f"cannot freeze norm {name}: no eps attribute; extend helpers/linear.frozen_norm")
        w = _t64(module.weight)
        scale = 1.0 + w if "Gemma" in name else w
        rms = torch.sqrt((x64**2).mean() + eps)
        return Affine(torch.diag(scale / rms))
    raise CompendiumError(f"cannot freeze norm module {name}: extend helpers/linear.frozen_norm")


# --------------------------------------------------------------------------- weights


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
    w = _t64(attn.c_attn.weight)
    d = w.shape[0]
    if w.shape[1] != 3 * d:
        raise CompendiumError("GPT-2 construction needs self-attention with a fused c_attn of shape [D, 3D]")
    b = _t64(attn.c_attn.bias)
    n_heads = int(attn.num_heads)
    return AttnWeights(
        wq=w[:, :d].T.contiguous(), wk=w[:, d:2 * d].T.contiguous(), wv=w[:, 2 * d:].T.contiguous(),
        wo=_t64(attn.c_proj.weight).T.contiguous(),
        bq=b[:d], bk=b[d:2 * d], bv=b[2 * d:], bo=_t64(attn.c_proj.bias),
        n_heads=n_heads, n_kv_heads=n_heads, head_dim=d // n_heads, scaling=float(attn.scaling),
    )


def projection_attention_weights(attn: nn.Module, config: object) -> AttnWeights:
    """q/k/v/o weights of a Llama / Gemma / Qwen2 / Mistral attention (``nn.Linear``, ``[out, in]``)."""
    n_heads = int(config.num_attention_heads)
    n_kv = int(getattr(config, "num_key_value_heads", None) or n_heads)
    head_dim = int(getattr(attn, "head_dim", 0) or config.hidden_size // n_heads)
    return AttnWeights(
        wq=_t64(attn.q_proj.weight), wk=_t64(attn.k_proj.weight), wv=_t64(attn.v_proj.weight),
        wo=_t64(attn.o_proj.weight),
        bq=_t64(attn.q_proj.bias), bk=_t64(attn.k_proj.bias), bv=_t64(attn.v_proj.bias), bo=_t64(attn.o_proj.bias),
        n_heads=n_heads, n_kv_heads=n_kv, head_dim=head_dim, scaling=float(attn.scaling),
        q_norm=getattr(attn, "q_norm", None), k_norm=getattr(attn, "k_norm", None),
        sliding_window=getattr(attn, "sliding_window", None),
    )


def ffn_weights(mlp: nn.Module) -> FFNWeights:
    """FFN weights of a GPT-2 ``Conv1D`` MLP (``c_fc`` / ``c_proj``, transposed) or a gated one."""
    if hasattr(mlp, "c_fc"):
        return FFNWeights(w_in=_t64(mlp.c_fc.weight).T.contiguous(), b_in=_t64(mlp.c_fc.bias),
                          w_out=_t64(mlp.c_proj.weight).T.contiguous(), b_out=_t64(mlp.c_proj.bias), act=mlp.act)
    if hasattr(mlp, "gate_proj"):
        return FFNWeights(w_in=_t64(mlp.up_proj.weight), b_in=_t64(mlp.up_proj.bias),
                          w_out=_t64(mlp.down_proj.weight), b_out=_t64(mlp.down_proj.bias), act=mlp.act_fn,
                          w_gate=_t64(mlp.gate_proj.weight), b_gate=_t64(mlp.gate_proj.bias))
    raise CompendiumError(f"unknown FFN module {type(mlp).__name__}: extend helpers/linear.ffn_weights")


# --------------------------------------------------------------------------- attention (Eq. 10)


def linear_attention(q_maps: torch.Tensor, q_offsets: torch.Tensor | None, keys: torch.Tensor,
                     values: torch.Tensor, wo: torch.Tensor, bo: torch.Tensor | None) -> Affine:
    """Linear attention of the current token over its context as an affine map (Eq. 10 generalised).

    ``q_maps`` [H, dh, D] maps the current token to each head's query (``q_h = q_maps[h] x +
    q_offsets[h]``); ``keys`` and ``values`` [H, n, dh] are the context's keys and values per query
    head; ``wo`` is [D, H*dh]. Output: ``sum_h W_O^h (sum_i v_i^h (k_i^h)^T) q_h + b_O``.
    """
    n_heads, dh, _ = q_maps.shape
    mem = values.transpose(1, 2) @ keys  # [H, dh, dh] = sum_i v_i k_i^T
    wo_h = wo.reshape(wo.shape[0], n_heads, dh).permute(1, 0, 2)  # [H, D, dh]
    read = wo_h @ mem  # [H, D, dh]
    a = torch.einsum("hde,hek->dk", read, q_maps)
    c = None
    if q_offsets is not None or bo is not None:
        c = torch.zeros(a.shape[0], dtype=a.dtype)
        if q_offsets is not None:
            c = c + torch.einsum("hde,he->d", read, q_offsets)
        if bo is not None:
            c = c + bo
    return Affine(a, c)


def gpt2_mhsa_matrix(attn: nn.Module, context: torch.Tensor) -> torch.Tensor:
    """The paper's ``W_MHSA`` (Eq. 10) of a GPT-2 attention for the context ``z_1..z_n`` ([n, D]).

    ``sum_h sum_i W_O^h W_V^h z_i z_i^T (W_K^h)^T W_Q^h`` with GPT-2's ``Conv1D`` weights (see
    :func:`gpt2_attention_weights`); LayerNorm, biases and the softmax scale omitted. Returns [D, D] float64.
    """
    w = gpt2_attention_weights(attn)
    return attention_map(w, _t64(context), x_norm=None, context_norm=None, options=SurrogateOptions()).a


def _head_rows(m: torch.Tensor, n_heads: int, dh: int) -> torch.Tensor:
    """[H*dh, ...] -> [H, dh, ...]."""
    return m.reshape(n_heads, dh, *m.shape[1:])


def attention_map(w: AttnWeights, context: torch.Tensor, x_norm: Affine | None, context_norm: Callable | None,
                  options: SurrogateOptions, rotary: tuple[torch.Tensor, torch.Tensor] | None = None,
                  q_real: torch.Tensor | None = None) -> Affine:
    """The attention sub-layer (without residual) at the current token (last row of ``context``).

    ``context`` [n, D] holds the layer inputs ``z_1..z_n`` (float64). ``x_norm`` is the frozen norm of
    the current token and ``context_norm`` maps the context rows through the real norm (both ``None``
    when LayerNorm is omitted). ``rotary`` is ``(R_keys [n, dh, dh], R_query [dh, dh])`` when rotary
    embeddings are included. ``q_real`` [H*dh] is the real query of the current token before any
    q-norm (Gemma's per-head norms, only with ``options.layernorm``).
    """
    bias = options.bias
    h, hk, dh = w.n_heads, w.n_kv_heads, w.head_dim
    ctx = context
    if w.sliding_window is not None and ctx.shape[0] > w.sliding_window:
        ctx = ctx[-w.sliding_window:]
    xin = context_norm(ctx) if context_norm is not None else ctx
    k = xin @ w.wk.T + (w.bk if (bias and w.bk is not None) else 0.0)
    v = xin @ w.wv.T + (w.bv if (bias and w.bv is not None) else 0.0)
    k = k.reshape(-1, hk, dh).transpose(0, 1)  # [Hk, n, dh]
    v = v.reshape(-1, hk, dh).transpose(0, 1)
    if options.layernorm and w.k_norm is not None:
        k = _apply_module64(w.k_norm, k)
    rep = h // hk
    k = k.repeat_interleave(rep, dim=0)
    v = v.repeat_interleave(rep, dim=0)
    q_maps = _head_rows(w.wq, h, dh)  # [H, dh, D]
    q_off = _head_rows(w.bq, h, dh) if (bias and w.bq is not None) else None
    if x_norm is not None:
        if x_norm.c is not None and bias:
            extra = q_maps @ x_norm.c
            q_off = extra if q_off is None else q_off + extra
        q_maps = q_maps @ x_norm.a
    if options.layernorm and w.q_norm is not None:
        if q_real is None:
            raise ValueError("q_real is needed to freeze the per-head query norm")
        qn = [frozen_norm(w.q_norm, qh, bias=bias) for qh in q_real.reshape(h, dh)]
        q_maps = torch.stack([f.a @ m for f, m in zip(qn, q_maps, strict=True)])
        if q_off is not None:
            q_off = torch.stack([f.a @ o for f, o in zip(qn, q_off, strict=True)])
    if rotary is not None:
        r_keys, r_query = rotary
        r_keys = r_keys[-k.shape[1]:]
        k = torch.einsum("nab,hnb->hna", r_keys, k)
        q_maps = r_query @ q_maps
        if q_off is not None:
            q_off = q_off @ r_query.T
    if options.scale:
        q_maps = q_maps * w.scaling
        q_off = None if q_off is None else q_off * w.scaling
    return linear_attention(q_maps, q_off, k, v, w.wo, w.bo if bias else None)


def _apply_module64(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a (norm) module in float64 on a float64 copy of its parameters."""
    import copy

    m = copy.deepcopy(module).to(torch.float64)
    with torch.no_grad():
        return m(x)


def rotary_matrices(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding as matrices: ``R[t] q == q * cos[t] + rotate_half(q) * sin[t]`` ([T, dh, dh] float64)."""
    cos, sin = _t64(cos), _t64(sin)
    dh = cos.shape[-1]
    eye = torch.eye(dh, dtype=torch.float64)
    half = dh // 2
    rot = torch.cat([-eye[:, half:], eye[:, :half]], dim=-1)  # row j = rotate_half(e_j)
    # row j of (eye * cos + rot * sin) is R e_j, i.e. column j of R.
    return (eye[None] * cos[:, None, :] + rot[None] * sin[:, None, :]).transpose(1, 2)


# --------------------------------------------------------------------------- FFN (Eq. 11 and beyond)


def ffn_linear_map(f: FFNWeights, bias: bool = False) -> Affine:
    """The paper's ``W_FFN = W_2 W_1`` (activation removed, Eq. 11); plain FFNs only."""
    if f.gated:
        raise CompendiumError(
            "a gated FFN (SwiGLU / GeGLU) has no linear form once its activation is removed: "
            "use the 'frozen' or 'jacobian' construction"
        )
    a = f.w_out @ f.w_in
    if not bias:
        return Affine(a)
    c = torch.zeros(a.shape[0], dtype=a.dtype)
    if f.b_in is not None:
        c = c + f.w_out @ f.b_in
    if f.b_out is not None:
        c = c + f.b_out
    return Affine(a, c)


def ffn_frozen_map(f: FFNWeights, u: torch.Tensor, bias: bool = False) -> Affine:
    """The FFN with its activation frozen at the input ``u`` (1-D): exact at ``u`` when ``bias=True``.

    Gated: ``W_down diag(act(W_gate u + b_gate)) W_up``; plain: ``W_2 diag(act(p) / p) W_1`` with
    ``p = W_1 u + b_1`` (``act'(0)`` where ``p == 0``). The activation is always evaluated at the real
    pre-activation (with its biases); ``bias`` only decides whether the map keeps its offset.
    """
    u64 = _t64(u).reshape(-1)
    if f.gated:
        pre = f.w_gate @ u64 + (f.b_gate if f.b_gate is not None else 0.0)
        diag = _act64(f.act, pre)
    else:
        pre = f.w_in @ u64 + (f.b_in if f.b_in is not None else 0.0)
        small = pre.abs() < 1e-12
        safe = torch.where(small, torch.ones_like(pre), pre)
        eps = 1e-6
        slope0 = (_act64(f.act, torch.tensor([eps], dtype=torch.float64))
                  - _act64(f.act, torch.tensor([-eps], dtype=torch.float64))) / (2 * eps)
        diag = torch.where(small, slope0.expand_as(pre), _act64(f.act, safe) / safe)
    scaled_in = diag[:, None] * f.w_in
    a = f.w_out @ scaled_in
    if not bias:
        return Affine(a)
    c = torch.zeros(a.shape[0], dtype=a.dtype)
    if f.b_in is not None:
        c = c + f.w_out @ (diag * f.b_in)
    if f.b_out is not None:
        c = c + f.b_out
    return Affine(a, c)


def _act64(act: Callable, x: torch.Tensor) -> torch.Tensor:
    return act(x.to(torch.float64)).to(torch.float64)


# --------------------------------------------------------------------------- capture of one sample


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

    Forward pre-hooks (``with_kwargs=True``) on every block record its input and the keyword
    arguments the model passes (attention mask, position ids, rotary embeddings); forward hooks
    record the output; pre-hooks on the block's FFN norm, FFN and post-norms record their real inputs
    at the current (last) token.
    """
    layout = LAYOUTS.get(lm.family)
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


# --------------------------------------------------------------------------- exact Jacobian (torch.func)


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


# --------------------------------------------------------------------------- surrogates of one block


def block_surrogates(lm: LoadedModel, layer: int, record: LayerRecord, constructions: Sequence[str] = CONSTRUCTIONS,
                     options: SurrogateOptions = SurrogateOptions()) -> dict[str, Affine]:
    """Every construction that applies to block ``layer`` at the sample's current token.

    ``linear`` is skipped for gated FFNs (it does not exist); ``jacobian`` ignores ``options`` (it is
    the real block). Returned maps act on ``z^l_n`` in float64.
    """
    unknown = set(constructions) - set(CONSTRUCTIONS)
    if unknown:
        raise CompendiumError(f"unknown construction(s) {sorted(unknown)}: choose from {CONSTRUCTIONS}")
    out: dict[str, Affine] = {}
    block = lm.blocks[layer]
    wanted_linear = [c for c in constructions if c in ("linear", "frozen")]
    if wanted_linear:
        layout = block_layout(lm.family)
        attn_mod, mlp_mod = getattr(block, layout.attn), getattr(block, layout.mlp)
        aw = gpt2_attention_weights(attn_mod) if lm.family == "gpt2" else projection_attention_weights(
            attn_mod, lm.model.config)
        fw = ffn_weights(mlp_mod)
        z = _t64(record.hidden)
        x = z[-1]
        d = z.shape[1]
        bias = options.bias
        n1 = frozen_norm(getattr(block, layout.norm_attn), x, bias) if options.layernorm else None
        ctx_norm = None
        if options.layernorm:
            norm_mod = getattr(block, layout.norm_attn)
            ctx_norm = (lambda rows: _apply_module64(norm_mod, rows)) if bias else (
                lambda rows: torch.stack([frozen_norm(norm_mod, r, bias=False).a @ r for r in rows]))
        rot = None
        if options.rotary and "position_embeddings" in record.kwargs and record.kwargs["position_embeddings"] is not None:
            cos, sin = record.kwargs["position_embeddings"]
            mats = rotary_matrices(cos[0], sin[0])
            rot = (mats, mats[-1])
        q_real = None
        if options.layernorm and aw.q_norm is not None:
            xin = _apply_module64(getattr(block, layout.norm_attn), x)
            q_real = aw.wq @ xin + (aw.bq if aw.bq is not None else 0.0)
        att = attention_map(aw, z, n1, ctx_norm, options, rotary=rot, q_real=q_real)
        if options.layernorm and layout.post_attn is not None:
            att = att.then(frozen_norm(getattr(block, layout.post_attn), record.parts["post_attn"], bias))
        att_res = att.residual()
        for name in wanted_linear:
            if name == "linear" and fw.gated:
                continue
            ffn = ffn_linear_map(fw, bias) if name == "linear" else ffn_frozen_map(fw, record.parts["mlp"], bias)
            if options.layernorm:
                ffn = frozen_norm(getattr(block, layout.norm_mlp), record.parts["norm_mlp"], bias).then(ffn)
                if layout.post_mlp is not None:
                    ffn = ffn.then(frozen_norm(getattr(block, layout.post_mlp), record.parts["post_mlp"], bias))
            out[name] = att_res.then(ffn.residual())
            assert out[name].a.shape == (d, d)
    if "jacobian" in constructions:
        out["jacobian"] = Affine(_t64(block_jacobian(block, record)))
    return out


def evaluate_map(m: Affine, x: torch.Tensor, rtol: float = TIE_RTOL) -> dict:
    """Proposition 1 and the direct check for the map ``m`` on ``x``, plus the eigenvalues of ``W^T W``.

    For an affine map both are applied to the homogeneous matrix and ``[x; 1]`` (see :func:`augment`).
    ``ratio`` is ``||m(x)|| / ||x||`` (the affine output when there is an offset).
    """
    w = augment(m.a, m.c)
    xh = homogeneous(x, m.c is not None)
    lam, u = gram_eigh(w)
    q = prop1_quantities(lam, u, xh)
    x64 = _t64(x).reshape(-1)
    ratio = float(torch.linalg.vector_norm(m(x64)) / torch.linalg.vector_norm(x64))
    return {
        "prop1_lhs": q["lhs"], "prop1_rhs": q["rhs"],
        "prop1": compare(q["lhs"], q["rhs"], rtol), "direct": direct_verdict(w, xh, rtol),
        "ratio": ratio, "eigenvalues": lam,
    }


def eigen_records(lm: LoadedModel, samples: Sequence[Sequence[int]], constructions: Sequence[str] = CONSTRUCTIONS,
                  options: SurrogateOptions = SurrogateOptions(), spectra_samples: int = 1,
                  layers: Sequence[int] | None = None, progress: bool = False) -> tuple[list[dict], dict]:
    """Evaluate every applicable construction on every block and sample (one current token per sample).

    Returns ``(rows, spectra)``: one row per (sample, layer, construction) with ``prop1`` / ``direct``
    verdicts (+1 / 0 / -1), ``meets`` (Proposition 1's condition ``lhs >= rhs``, ties included),
    ``ratio`` (surrogate ``||W x|| / ||x||``), ``real_ratio`` (``||z^(l+1)_n|| / ||z^l_n||`` of the real
    block) and ``agrees`` (the surrogate's verdict equals the real block's grow / shrink); ``spectra``
    maps ``(sample, layer, construction)`` to the eigenvalues of ``W^T W`` for the first
    ``spectra_samples`` samples.
    """
    rows: list[dict] = []
    spectra: dict[tuple[int, int, str], np.ndarray] = {}
    layer_ids = list(range(lm.n_layers)) if layers is None else list(layers)
    iterator = enumerate(samples)
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(list(iterator), desc=f"{lm.name}: samples")
    for s, ids in iterator:
        if len(ids) < 2:
            raise CompendiumError(f"sample {s} has {len(ids)} token(s): the linear attention needs a context of >= 2")
        recs = capture_sample(lm, ids)
        for layer in layer_ids:
            rec = recs[layer]
            x = rec.hidden[-1]
            real = float(torch.linalg.vector_norm(rec.out_last.double()) / torch.linalg.vector_norm(x.double()))
            real_verdict = compare(real**2, 1.0)
            for name, m in block_surrogates(lm, layer, rec, constructions, options).items():
                ev = evaluate_map(m, x)
                if s < spectra_samples:
                    spectra[(s, layer, name)] = ev["eigenvalues"]
                rows.append({
                    "sample": s, "layer": layer, "construction": name, "n_tokens": len(ids),
                    "prop1_lhs": ev["prop1_lhs"], "prop1_rhs": ev["prop1_rhs"],
                    "prop1": ev["prop1"], "direct": ev["direct"], "meets": ev["prop1"] >= 0,
                    "ratio": ev["ratio"], "real_ratio": real, "real_grows": real_verdict >= 0,
                    "agrees": (ev["prop1"] >= 0) == (real_verdict >= 0),
                    "lambda_min": float(ev["eigenvalues"][0]), "lambda_max": float(ev["eigenvalues"][-1]),
                })
    return rows, spectra


# --------------------------------------------------------------------------- tables


def table2(rows: list[dict] | object) -> object:
    """Table 2-style percentages: share (%) of matrices meeting Proposition 1 per layer and overall.

    Input: rows from :func:`eigen_records` (list or DataFrame, may carry extra ``model`` / ``dataset``
    columns). Output: a DataFrame indexed by the grouping columns and ``construction``, one column per
    layer plus ``overall`` and ``n`` (matrices).
    """
    import pandas as pd

    df = pd.DataFrame(rows)
    keys = [k for k in ("model", "dataset", "options") if k in df.columns] + ["construction"]
    per_layer = df.pivot_table(index=keys, columns="layer", values="meets", aggfunc="mean") * 100.0
    per_layer.columns = [f"L{c}" for c in per_layer.columns]
    overall = df.groupby(keys)["meets"].agg(["mean", "size"])
    per_layer["overall"] = overall["mean"] * 100.0
    per_layer["n"] = overall["size"]
    return per_layer


def agreement_table(rows: list[dict] | object) -> object:
    """How well each surrogate predicts the real block: verdict agreement and norm-ratio fit.

    Per grouping (``model``, ``dataset``, ``options`` if present) and construction: ``meets_%``
    (Proposition 1 holds), ``real_grows_%`` (the real block does not shrink the norm), ``agree_%``
    (same verdict), ``agree_when_real_shrinks_%``, Spearman correlation of the surrogate's and the
    real ratio, the median absolute log-ratio error and ``n``.
    """
    import pandas as pd
    from scipy.stats import spearmanr

    df = pd.DataFrame(rows)
    keys = [k for k in ("model", "dataset", "options") if k in df.columns] + ["construction"]
    out = []
    for key, g in df.groupby(keys):
        shrink = g[~g["real_grows"]]
        rho = spearmanr(g["ratio"], g["real_ratio"]).statistic if len(g) > 2 else math.nan
        out.append(dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True)) | {
            "meets_%": 100.0 * g["meets"].mean(),
            "real_grows_%": 100.0 * g["real_grows"].mean(),
            "agree_%": 100.0 * g["agrees"].mean(),
            "agree_when_real_shrinks_%": 100.0 * shrink["agrees"].mean() if len(shrink) else math.nan,
            "spearman_ratio": float(rho),
            "median_abs_log_ratio_error": float(np.median(np.abs(np.log(g["ratio"]) - np.log(g["real_ratio"])))),
            "n": len(g),
        })
    return pd.DataFrame(out).set_index(keys)


# --------------------------------------------------------------------------- models for the notebook


def random_gpt2(n_layer: int, n_embd: int, n_head: int, vocab_size: int, n_positions: int = 1024,
                seed: int = 0, name: str = "gpt2-random") -> LoadedModel:
    """A randomly initialised GPT-2-architecture model (GPT-2's own init, std 0.02): the control."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from helpers.models import wrap_model

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=n_layer, n_embd=n_embd, n_head=n_head, vocab_size=vocab_size, n_positions=n_positions)
    model = GPT2LMHeadModel(cfg).eval()
    label = f"GPT-2 architecture, random init ({n_layer} layers, d={n_embd}, seed {seed})"
    return wrap_model(model, None, name=name, label=label, note="randomly initialised control")


def hub_model_cached(repo_id: str) -> bool:
    """Whether ``repo_id`` can be loaded without the network (its config is in the local HF cache)."""
    try:
        from huggingface_hub import try_to_load_from_cache

        hit = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # noqa: BLE001 -- any failure means 'not available offline'
        return False
    return isinstance(hit, str)


def untrained_twin(profile: str = "default", seed: int = 0) -> LoadedModel:
    """The project's natural-text GPT-2-architecture model of ``profile`` *before* training: same
    config and tokenizer as :func:`helpers.training.natural_model_dir`'s model, GPT-2's random init."""
    from helpers.models import wrap_model
    from helpers.training import build_model, gpt2_bpe_tokenizer, natural_setup

    data, cfg, _ = natural_setup(profile, seed)
    model = build_model(cfg, seed).eval()
    label = f"GPT-2 arch., untrained ({cfg.n_layer} layers, d={cfg.n_embd}, random init seed {seed})"
    return wrap_model(model, gpt2_bpe_tokenizer(data["vocab_size"]), name=f"gpt2-untrained-{profile}", label=label,
                      note="randomly initialised control (same config as the trained natural-text model)")


def pick_samples(texts: Sequence[str], models: Sequence[LoadedModel], n: int, max_tokens: int, min_tokens: int,
                 seed: int = 0) -> tuple[list[str], dict[str, list[list[int]]]]:
    """``n`` texts, in a seeded random order, that keep at least ``min_tokens`` tokens under every model's
    tokenizer (truncated to ``max_tokens``, and to each model's context); their token ids per model name."""
    import random

    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    chosen: list[str] = []
    ids: dict[str, list[list[int]]] = {m.name: [] for m in models}
    for i in order:
        if len(chosen) == n:
            break
        rows = {}
        for m in models:
            ctx = getattr(m.model.config, "n_positions", None) or getattr(m.model.config, "max_position_embeddings", None)
            rows[m.name] = m.encode([texts[i]], min(max_tokens, ctx or max_tokens))[0]
        if all(len(r) >= min_tokens for r in rows.values()):
            chosen.append(texts[i])
            for name, row in rows.items():
                ids[name].append(row)
    if len(chosen) < n:
        raise CompendiumError(f"only {len(chosen)} of {len(texts)} texts have >= {min_tokens} tokens: lower min_tokens")
    return chosen, ids


def spectra_frame(spectra: dict) -> object:
    """Eigenvalues from :func:`eigen_records` as a long DataFrame (sample, layer, construction, rank, eigenvalue);
    ``rank`` 0 is the largest eigenvalue."""
    import pandas as pd

    parts = []
    for (s, layer, name), lam in spectra.items():
        desc = np.sort(np.asarray(lam))[::-1]
        parts.append(pd.DataFrame({"sample": s, "layer": layer, "construction": name,
                                   "rank": np.arange(len(desc)), "eigenvalue": desc}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def load_trained_natural(cache_dir: str = "results/cache", profile: str = "default", seed: int = 0,
                         device: str = "cpu") -> LoadedModel | None:
    """The project's natural-text GPT-2-architecture model (notebook 06) if trained, else ``None``."""
    from helpers.models import load_model
    from helpers.training import natural_model_dir

    folder = natural_model_dir(cache_dir, profile, seed)
    if folder is None:
        return None
    lm = load_model(str(folder), device=device)
    cfg = lm.model.config
    lm.name = f"gpt2-natural-{profile}"
    lm.label = f"GPT-2 arch., trained on natural text ({cfg.n_layer} layers, d={cfg.n_embd}, {profile} profile)"
    return lm
