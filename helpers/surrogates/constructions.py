"""Linear surrogates of one decoder block at the current token (Eq. 10-12 and beyond).

The paper's surrogate of a block applied to the current token ``x = z_n`` (the last token of the
context, input of the layer)::

    W_MHSA   = sum_h sum_i W_O^h W_V^h z_i z_i^T (W_K^h)^T W_Q^h      (Eq. 10, linear attention)
    W_FFN    = W_2 W_1                                                  (Eq. 11, activation removed)
    W_linear = (I + W_FFN)(I + W_MHSA)                                  (Eq. 12)

Three constructions per block and token (``CONSTRUCTIONS``):

* ``linear`` -- the paper's Eq. 12 (plain FFN only: a gated FFN has no linear form once the activation
  is removed, which is why the paper skipped LLaMA).
* ``frozen`` -- beyond the paper: the FFN linearised with its activation frozen at the current token,
  ``W_down diag(act(W_gate u_n)) W_up`` for gated FFNs (SwiGLU / GeGLU) and
  ``W_2 diag(act(p_n) / p_n) W_1`` (``p_n = W_1 u_n + b_1``) for plain ones; ``u_n`` is the real FFN
  input of the current token. Either reproduces the real FFN output at ``u_n`` exactly. Attention is
  the same linear attention as in ``linear``.
* ``jacobian`` -- beyond the paper: the exact local Jacobian of the real block call
  (:mod:`helpers.surrogates.jacobian`). Not an analogue of Table 2 (see there): ``PAPER_ANALOGUES``
  lists the constructions whose Proposition 1 verdict is.

What the paper omits is an explicit option (:class:`SurrogateOptions`), so its effect can be seen:
LayerNorm / RMSNorm (frozen at the current token when included; context tokens go through the real
norm), biases (the surrogate becomes affine ``W x + c``), the softmax scale, and rotary position
embeddings (Llama / Gemma).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from helpers import CompendiumError
from helpers.lm.families import block_layout
from helpers.lm.load import LoadedModel
from helpers.surrogates.algebra import Affine, t64
from helpers.surrogates.jacobian import block_jacobian
from helpers.surrogates.record import LayerRecord
from helpers.surrogates.weights import AttnWeights, FFNWeights, attention_weights, ffn_weights

CONSTRUCTIONS = ("linear", "frozen", "jacobian")
PAPER_ANALOGUES = ("linear", "frozen")
"""Constructions whose Proposition 1 verdict is an analogue of the paper's Table 2 (Eq. 10-12 and its
frozen-gate extension). The Jacobian is not: in a pre-norm block ``J z_n ~ z_n`` by construction."""


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


PAPER_OPTIONS = SurrogateOptions()
"""The paper's surrogate: LayerNorm, biases, softmax scale and rotary embeddings all omitted."""

OPTION_VARIANTS = (
    PAPER_OPTIONS,
    SurrogateOptions(layernorm=True),
    SurrogateOptions(bias=True),
    SurrogateOptions(scale=True),
    SurrogateOptions(rotary=True),
    SurrogateOptions(layernorm=True, bias=True, scale=True, rotary=True),
)
"""The paper's surrogate, each omission undone alone, and all undone together."""


# --------------------------------------------------------------------------- norms


def frozen_norm(module: nn.Module, x: torch.Tensor, bias: bool = True) -> Affine:
    """The norm ``module`` frozen at ``x`` (1-D): an affine map ``A x' + c`` with ``A x + c == module(x)``.

    LayerNorm: ``A = diag(gamma) (I - 11^T/D) / sqrt(var(x) + eps)``, ``c = beta``. RMSNorm (Llama):
    ``A = diag(w) / rms(x)``; Gemma's RMSNorm scales by ``1 + w``. ``bias=False`` drops ``c``.
    """
    x64 = t64(x).reshape(-1)
    d = x64.numel()
    name = type(module).__name__
    if isinstance(module, nn.LayerNorm):
        centre = torch.eye(d, dtype=torch.float64) - 1.0 / d
        var = x64.var(unbiased=False)
        gamma = t64(module.weight) if module.weight is not None else torch.ones(d, dtype=torch.float64)
        a = gamma[:, None] * centre / torch.sqrt(var + module.eps)
        c = t64(module.bias) if (bias and module.bias is not None) else None
        return Affine(a, c)
    if "RMSNorm" in name:
        eps = getattr(module, "variance_epsilon", getattr(module, "eps", None))
        if eps is None:
            raise CompendiumError(f"cannot freeze norm {name}: no eps attribute; extend "
                                  "helpers/surrogates/constructions.frozen_norm")
        w = t64(module.weight)
        scale = 1.0 + w if "Gemma" in name else w
        rms = torch.sqrt((x64**2).mean() + eps)
        return Affine(torch.diag(scale / rms))
    raise CompendiumError(f"cannot freeze norm module {name}: extend helpers/surrogates/constructions.frozen_norm")


def _apply_module64(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a (norm) module in float64 on a float64 copy of its parameters."""
    m = copy.deepcopy(module).to(torch.float64)
    with torch.no_grad():
        return m(x)


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
    q-norm (Gemma's per-head norms, only with ``options.layernorm``). With the default options and
    no norms this is the paper's ``W_MHSA`` (Eq. 10).
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


def rotary_matrices(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary embedding as matrices: ``R[t] q == q * cos[t] + rotate_half(q) * sin[t]`` ([T, dh, dh] float64)."""
    cos, sin = t64(cos), t64(sin)
    dh = cos.shape[-1]
    eye = torch.eye(dh, dtype=torch.float64)
    half = dh // 2
    rot = torch.cat([-eye[:, half:], eye[:, :half]], dim=-1)  # row j = rotate_half(e_j)
    # row j of (eye * cos + rot * sin) is R e_j, i.e. column j of R.
    return (eye[None] * cos[:, None, :] + rot[None] * sin[:, None, :]).transpose(1, 2)


# --------------------------------------------------------------------------- FFN (Eq. 11 and beyond)


def _offset(f: FFNWeights, a: torch.Tensor, b_in_scale: torch.Tensor | None) -> torch.Tensor:
    """The FFN map's offset ``W_out (s * b_in) + b_out`` (``s = 1`` when ``b_in_scale`` is ``None``)."""
    c = torch.zeros(a.shape[0], dtype=a.dtype)
    if f.b_in is not None:
        c = c + f.w_out @ (f.b_in if b_in_scale is None else b_in_scale * f.b_in)
    if f.b_out is not None:
        c = c + f.b_out
    return c


def ffn_linear_map(f: FFNWeights, bias: bool = False) -> Affine:
    """The paper's ``W_FFN = W_2 W_1`` (activation removed, Eq. 11); plain FFNs only."""
    if f.gated:
        raise CompendiumError(
            "a gated FFN (SwiGLU / GeGLU) has no linear form once its activation is removed: "
            "use the 'frozen' or 'jacobian' construction"
        )
    a = f.w_out @ f.w_in
    return Affine(a, _offset(f, a, None)) if bias else Affine(a)


def _act64(act: Callable, x: torch.Tensor) -> torch.Tensor:
    return act(x.to(torch.float64)).to(torch.float64)


def ffn_frozen_map(f: FFNWeights, u: torch.Tensor, bias: bool = False) -> Affine:
    """The FFN with its activation frozen at the input ``u`` (1-D): exact at ``u`` when ``bias=True``.

    Gated: ``W_down diag(act(W_gate u + b_gate)) W_up``; plain: ``W_2 diag(act(p) / p) W_1`` with
    ``p = W_1 u + b_1`` (``act'(0)`` where ``p == 0``). The activation is always evaluated at the real
    pre-activation (with its biases); ``bias`` only decides whether the map keeps its offset.
    """
    u64 = t64(u).reshape(-1)
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
    a = f.w_out @ (diag[:, None] * f.w_in)
    return Affine(a, _offset(f, a, diag)) if bias else Affine(a)


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
        aw = attention_weights(lm.family, attn_mod, lm.model.config)
        fw = ffn_weights(mlp_mod)
        z = t64(record.hidden)
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
        out["jacobian"] = Affine(t64(block_jacobian(block, record)))
    return out
