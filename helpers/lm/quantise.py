"""GGUF weight quantisation of an fp32 model: what 4-bit rounding does to the statistics.

The compendium's real models (every entry of :data:`helpers.lm.registry.REGISTRY`, each with its ``scheme``) exist
only as 4-bit GGUF files dequantised to float.
To separate "what the model learned" from "what 4-bit rounding did", we quantise and dequantise the weights of a
model we *do* have in fp32 (the project-trained GPT-2-architecture model) with the same GGUF schemes the shipped
files use, and analyse the result like any model.

Everything quantises along the contiguous last dimension of GGUF's layout, i.e. along the *input* dimension of
a weight matrix (rows of ``[out, in]``). GPT-2's ``Conv1D`` stores ``[in, out]``, so its weights are transposed
to ``[out, in]`` before quantising and back after. Q4_1, Q5_0 and Q8_0 use the ``gguf`` package's quantisers;
Q4_K, which ``gguf`` cannot quantise, is :func:`quantize_q4_k`, a vectorised re-implementation of llama.cpp's
reference ``quantize_row_q4_K_ref``. Every type is dequantised by ``gguf.quants.dequantize``.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from gguf import GGMLQuantizationType
from gguf.quants import dequantize, quantize

from helpers import CompendiumError
from helpers.lm.families import FAMILIES
from helpers.lm.load import LoadedModel, wrap_model
from helpers.paths import config_hash

QK_K = 256


"""Elements of a K-quant super-block."""


Q4_K_BYTES = 144


"""Bytes of one Q4_K super-block: fp16 d, fp16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of 4-bit quants."""


BLOCK_SIZES: dict[str, int] = {"Q4_1": 32, "Q5_0": 32, "Q8_0": 32, "Q4_K": QK_K, "F16": 1}


"""The quantisation types :func:`roundtrip` knows and their block sizes along the last dimension."""


_F32 = np.float32


def _seq_sum(a: np.ndarray) -> np.ndarray:
    """Sum over the last axis in float32, strictly left to right (as a C ``for`` loop does; ``np.sum`` is
    pairwise and would round differently)."""
    return np.add.accumulate(a, axis=-1, dtype=np.float32)[..., -1]


def _nearest_int(v: np.ndarray) -> np.ndarray:
    """llama.cpp's ``nearest_int`` (round half to even; identical for |v| < 2^22, where it asserts)."""
    return np.rint(v)


def _make_qkx2_quants(x: np.ndarray, w: np.ndarray, nmax: int, rmin: float, rdelta: float,
                      nstep: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """llama.cpp's ``make_qkx2_quants`` with ``use_mad=false`` for every row of ``x`` at once ([B, n], float32):
    the affine grid ``scale*l - the_min`` (l = 0..nmax) minimising the weighted squared error, searched over
    ``nstep+1`` trial inverse scales ``(nmax + rmin + rdelta*i)/(max-min)`` (``min`` being the best fit so far,
    as in the reference), each refined by weighted least squares (the min clamped to <= 0).
    Returns ``(scale [B], the_min [B], L [B, n] float32 quants)``."""
    mn = x.min(axis=-1)
    mx = x.max(axis=-1)
    sum_w = _seq_sum(w)
    sum_x = _seq_sum(w * x)
    mn = np.minimum(mn, _F32(0))
    flat = mx == mn
    span = np.where(flat, _F32(1), mx - mn)

    iscale = _F32(nmax) / span
    scale = _F32(1) / iscale
    L = np.clip(_nearest_int(iscale[:, None] * (x - mn[:, None])), 0, nmax)
    diff = scale[:, None] * L + mn[:, None] - x
    best = _seq_sum(w * (diff * diff))
    for step in range(nstep + 1):
        # as in the reference, a better fit's min moves the grid origin of the following trials
        span = np.where(flat, _F32(1), mx - mn)
        iscale = (_F32(rmin) + _F32(rdelta) * _F32(step) + _F32(nmax)) / span
        laux = np.clip(_nearest_int(iscale[:, None] * (x - mn[:, None])), 0, nmax)
        wl = w * laux
        sum_l = _seq_sum(wl)
        sum_l2 = _seq_sum(wl * laux)
        sum_xl = _seq_sum(wl * x)
        D = sum_w * sum_l2 - sum_l * sum_l
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            this_scale = (sum_w * sum_xl - sum_x * sum_l) / D
            this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D
            positive = this_min > 0
            this_min = np.where(positive, _F32(0), this_min)
            this_scale = np.where(positive, sum_xl / sum_l2, this_scale)
            diff = this_scale[:, None] * laux + this_min[:, None] - x
            cur = _seq_sum(w * (diff * diff))
        better = (D > 0) & (cur < best) & ~flat
        L = np.where(better[:, None], laux, L)
        best = np.where(better, cur, best)
        scale = np.where(better, this_scale, scale)
        mn = np.where(better, this_min, mn)
    L = np.where(flat[:, None], _F32(0), L)
    scale = np.where(flat, _F32(0), scale)
    return scale.astype(np.float32), (-mn).astype(np.float32), L.astype(np.float32)


def _to_u6(v: np.ndarray) -> np.ndarray:
    """``uint8_t l = nearest_int(v); l = MIN(63, l)`` (a negative value wraps as the C cast does)."""
    return np.minimum(_nearest_int(v).astype(np.int64) & 0xFF, 63).astype(np.uint8)


def quantize_q4_k(x: np.ndarray) -> np.ndarray:
    """Quantise ``x`` (float32, last dimension a multiple of 256) to GGUF's Q4_K bytes, shape ``[..., n/256*144]``.

    A re-implementation of llama.cpp's reference quantiser ``quantize_row_q4_K_ref`` (ggml/src/ggml-quants.c,
    read in ollama/ollama's vendored copy, ``ml/backend/ggml/ggml/src/ggml-quants.c``), which ``llama-quantize``
    uses for Q4_K when no importance matrix is given. Per super-block of 256 and sub-block of 32:

    1. weights ``av_x + |x|`` with ``av_x`` the sub-block's RMS; ``make_qkx2_quants(nmax=15, rmin=-1,
       rdelta=0.1, nstep=20, use_mad=false)`` gives a scale and a min (the grid is ``scale*l - min``, min >= 0);
    2. scales and mins are quantised to 6 bits against the super-block maxima: ``d = fp16(max_scale/63)``,
       ``dmin = fp16(max_min/63)``, ``sc = min(63, round(63*scale/max_scale))``, likewise ``m``;
    3. the quants are re-rounded with the 6-bit scales: ``l = clip(round((x + dmin*m)/(d*sc)), 0, 15)``
       (sub-blocks with ``d*sc == 0`` keep step 1's quants), so ``x ~ d*sc*l - dmin*m``.

    Every operation is done in float32 in the reference's order, with left-to-right sums, so the bytes equal the
    reference compiled without floating-point contraction (x86-64's default): checked bit for bit against it
    (gcc -O2 -ffp-contract=off) on 8,000+ super-blocks of Gaussian, heavy-tailed, one-signed, sparse, constant
    and tiny/huge-scale data (tests/test_quantise.py keeps a known-answer hash). A build that fuses
    multiply-adds (``-march=native`` with FMA, GCC on aarch64) rounds some sums differently and then differs in
    about 1 super-block in 100. Not reproduced: the importance-matrix path (``quantize_row_q4_K_impl``,
    ``make_qkx3_quants``/``make_qp_quants``), which ``llama-quantize --imatrix`` uses and the shipped files may
    have used.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    n = x.shape[-1] if x.ndim else 0
    if x.ndim == 0 or n % QK_K:
        raise CompendiumError(f"Q4_K needs a last dimension that is a multiple of {QK_K} (got shape {x.shape})")
    lead = x.shape[:-1]
    sub = x.reshape(-1, 32)                                             # [n_super*8, 32]
    n_super = sub.shape[0] // 8

    av_x = np.sqrt(_seq_sum(sub * sub) / _F32(32))
    weights = av_x[:, None] + np.abs(sub)
    scales, mins, L = _make_qkx2_quants(sub, weights, nmax=15, rmin=-1.0, rdelta=0.1, nstep=20)
    scales = scales.reshape(n_super, 8)
    mins = mins.reshape(n_super, 8)
    L = L.reshape(n_super, 8, 32)

    max_scale = np.maximum(scales.max(axis=-1), _F32(0))
    max_min = np.maximum(mins.max(axis=-1), _F32(0))
    with np.errstate(divide="ignore"):
        inv_scale = np.where(max_scale > 0, _F32(63) / max_scale, _F32(0)).astype(np.float32)
        inv_min = np.where(max_min > 0, _F32(63) / max_min, _F32(0)).astype(np.float32)
    ls = _to_u6(inv_scale[:, None] * scales)                            # [n_super, 8]
    lm = _to_u6(inv_min[:, None] * mins)
    d16 = (max_scale / _F32(63)).astype(np.float16)
    dmin16 = (max_min / _F32(63)).astype(np.float16)

    d = d16.astype(np.float32)[:, None] * ls.astype(np.float32)         # [n_super, 8]
    dm = dmin16.astype(np.float32)[:, None] * lm.astype(np.float32)
    xs = sub.reshape(n_super, 8, 32)
    with np.errstate(divide="ignore", invalid="ignore"):
        requant = np.clip(_nearest_int((xs + dm[..., None]) / d[..., None]), 0, 15)
    L = np.where((d != 0)[..., None], requant, L).astype(np.uint8)

    packed = np.empty((n_super, 12), dtype=np.uint8)                    # get_scale_min_k4's layout
    packed[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    packed[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    packed[:, 8:12] = (ls[:, 4:8] & 0x0F) | ((lm[:, 4:8] & 0x0F) << 4)
    q = L.reshape(n_super, 4, 2, 32)                                    # 64 values -> 32 bytes: low, high nibble
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(n_super, 128)

    blocks = np.concatenate([d16.view(np.uint8).reshape(n_super, 2), dmin16.view(np.uint8).reshape(n_super, 2),
                             packed, qs], axis=-1)
    return blocks.reshape(*lead, n // QK_K * Q4_K_BYTES)


def _check_type(qtype: str, n: int) -> None:
    """A one-line error for an unknown type or a row length that is not a multiple of its block."""
    if qtype not in BLOCK_SIZES:
        raise CompendiumError(f"unknown quantisation type '{qtype}': use one of {', '.join(BLOCK_SIZES)}")
    if n % BLOCK_SIZES[qtype]:
        raise CompendiumError(f"{qtype} needs a last dimension that is a multiple of {BLOCK_SIZES[qtype]} "
                              f"(got {n})")


def quantize_tensor(w: np.ndarray, qtype: str) -> np.ndarray:
    """GGUF data of ``w`` (quantised along its last dimension): uint8 blocks for the block types, float16 for
    ``"F16"``. This is exactly what a GGUF file stores (tests/gguf_files.py writes one)."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    _check_type(qtype, w.shape[-1] if w.ndim else 0)
    if qtype == "Q4_K":
        return quantize_q4_k(w)
    return quantize(w, GGMLQuantizationType[qtype])


def roundtrip(w: np.ndarray, qtype: str) -> np.ndarray:
    """``w`` quantised with ``qtype`` ("Q4_1", "Q5_0", "Q8_0", "Q4_K" or "F16") along its last dimension and
    dequantised by ``gguf.quants.dequantize``: a float32 array of ``w``'s shape."""
    data = quantize_tensor(w, qtype)
    return np.asarray(dequantize(data, GGMLQuantizationType[qtype]), dtype=np.float32).reshape(np.shape(w))


@dataclass(frozen=True)
class Scheme:
    """Which GGUF type a GPT-2 parameter gets under one of the shipped files' schemes."""

    name: str
    matrix: str
    """type of the block matrices (attention q/k/v/o and MLP), before llama.cpp's fallback for short rows"""
    embedding: str
    """type of the token embedding (and of an untied LM head)"""
    description: str


SCHEMES: dict[str, Scheme] = {
    "Q4_1": Scheme("Q4_1", matrix="Q4_1", embedding="Q8_0",
                   description="SmolLM2's file: block matrices Q4_1, token embedding Q8_0, 1-D tensors and "
                               "position embedding F32"),
    "Q4_K_M": Scheme("Q4_K_M", matrix="Q4_K", embedding="Q8_0",
                     description="Gemma's file, simplified: block matrices Q4_K where the row (input) length is a "
                                 "multiple of 256, else Q5_0 (llama.cpp's fallback); no Q6_K/Q8_0 mix in ffn_down "
                                 "and attn_v; token embedding Q8_0; 1-D tensors and position embedding F32"),
}










def _names(family: str):
    """The round-trip names of ``family`` (GPT-2 and the Llama-like families have them) or a one-line error."""
    row = FAMILIES.get(family)
    if row is None or row.quant is None:
        known = sorted(n for n, f in FAMILIES.items() if f.quant is not None)
        raise CompendiumError(f"no GGUF round trip for model family '{family}': supported are {', '.join(known)}")
    return row.quant


def _scheme(scheme: str) -> Scheme:
    """The scheme named ``scheme`` or a one-line error."""
    if scheme not in SCHEMES:
        raise CompendiumError(f"unknown quantisation scheme '{scheme}': use one of {', '.join(SCHEMES)}")
    return SCHEMES[scheme]


def _fit(qtype: str, n: int, name: str) -> str:
    """llama.cpp's fallback for a row length ``n`` that ``qtype``'s block does not divide: Q4_K -> Q5_0 -> F16;
    for the legacy types llama.cpp refuses, and so do we."""
    if n % BLOCK_SIZES[qtype] == 0:
        return qtype
    if qtype == "Q4_K":
        return "Q5_0" if n % BLOCK_SIZES["Q5_0"] == 0 else "F16"
    raise CompendiumError(f"{name}: row length {n} is not a multiple of {BLOCK_SIZES[qtype]}, so llama.cpp "
                          f"cannot store it as {qtype}")


def tensor_type(name: str, shape: Sequence[int], scheme: str, family: str = "gpt2") -> str | None:
    """The GGUF type of the HF GPT-2 parameter ``name`` (of HF ``shape``) under ``scheme``; ``None`` when it is
    kept in F32 (1-D tensors, the position embedding). Block matrices are GPT-2 ``Conv1D`` weights ``[in, out]``,
    whose GGUF rows have length ``in = shape[0]``; embeddings ``[vocab, d]`` have rows of length ``d``. An untied
    ``lm_head.weight`` gets the embedding's type (llama.cpp's Q4_K_M would give ``output.weight`` Q6_K, which
    ``gguf`` cannot quantise)."""
    plan, names = _scheme(scheme), _names(family)
    if len(shape) < 2 or name in names.kept_2d:
        return None
    if name in names.embeddings:
        return _fit(plan.embedding, int(shape[-1]), name)
    if names.matrices.search(name):
        return _fit(plan.matrix, int(shape[0] if names.conv1d else shape[-1]), name)
    raise CompendiumError(f"parameter '{name}' is not a {family} parameter this module knows: add it to the "
                          f"family's QuantNames in helpers/lm/families.py")


def _is_conv1d(name: str, family: str = "gpt2") -> bool:
    """Whether ``name`` is a GPT-2 ``Conv1D`` weight (stored ``[in, out]``, transposed for GGUF)."""
    names = _names(family)
    return names.conv1d and bool(names.matrices.search(name))


def _gguf_layout(name: str, p: torch.Tensor, family: str = "gpt2") -> np.ndarray:
    """Parameter ``p`` as a float32 array in GGUF's layout (rows along the input dimension)."""
    w = p.detach().to(device="cpu", dtype=torch.float32).numpy()
    return np.ascontiguousarray(w.T if _is_conv1d(name, family) else w)


def _hf_layout(name: str, w: np.ndarray, family: str = "gpt2") -> np.ndarray:
    """The inverse of :func:`_gguf_layout`."""
    return np.ascontiguousarray(w.T if _is_conv1d(name, family) else w)


def _rel_error(w: np.ndarray, w_hat: np.ndarray) -> float:
    """Relative Frobenius error ``|w - w_hat| / |w|`` (0 for an all-zero ``w`` reproduced exactly)."""
    num = float(np.linalg.norm((w.astype(np.float64) - w_hat.astype(np.float64)).ravel()))
    den = float(np.linalg.norm(w.astype(np.float64).ravel()))
    return num / den if den > 0 else (0.0 if num == 0 else float("inf"))


def quantise_model(model: torch.nn.Module, scheme: str) -> tuple[torch.nn.Module, pd.DataFrame]:
    """A deep copy of ``model`` whose weights went through ``scheme``'s GGUF quantise-dequantise round trip,
    and a table with one row per parameter: ``name``, ``shape`` (HF), ``type`` ("F32" when kept) and
    ``rel_error`` (relative Frobenius error). ``model`` is not modified; a tied LM head follows the token
    embedding (it is the same tensor)."""
    _scheme(scheme)
    family = model.config.model_type
    plan = [(name, tensor_type(name, tuple(p.shape), scheme, family)) for name, p in model.named_parameters()]
    quantised = copy.deepcopy(model)
    params = dict(quantised.named_parameters())
    rows = []
    with torch.no_grad():
        for name, qtype in plan:
            p = params[name]
            if qtype is None:
                rows.append({"name": name, "shape": tuple(p.shape), "type": "F32", "rel_error": 0.0})
                continue
            w = _gguf_layout(name, p, family)
            w_hat = roundtrip(w, qtype)
            rows.append({"name": name, "shape": tuple(p.shape), "type": qtype, "rel_error": _rel_error(w, w_hat)})
            p.copy_(torch.from_numpy(_hf_layout(name, w_hat, family)).to(device=p.device, dtype=p.dtype))
    return quantised, pd.DataFrame(rows, columns=["name", "shape", "type", "rel_error"])


def quantised_twin(lm: LoadedModel, scheme: str) -> LoadedModel:
    """``lm`` after ``scheme``'s GGUF round trip (:func:`quantise_model`): same config, tokenizer and device,
    with a note saying which tensors got which type and the per-tensor table in ``extra["tensors"]``."""
    from importlib.metadata import version

    model, table = quantise_model(lm.model, scheme)
    counts = table.groupby("type", sort=True)["name"].count()
    note = (f"{scheme} round trip of {lm.name} ({SCHEMES[scheme].description}): "
            + ", ".join(f"{count} tensors {qtype}" for qtype, count in counts.items()))
    twin = wrap_model(model, lm.tokenizer, name=f"{lm.name}-{scheme.lower()}",
                      label=f"{lm.label}, {scheme} round trip",
                      fingerprint=f"{lm.fingerprint}:{scheme}:gguf{version('gguf')}:code1", note=note)
    twin.extra["tensors"] = table  # per-tensor type and relative error
    return twin


def noisy_twin(lm: LoadedModel, rel_error: dict[str, float], seed: int = 0, name: str = "noise") -> LoadedModel:
    """``lm`` with Gaussian noise added to each parameter named in ``rel_error`` (e.g. a round trip's per-tensor
    table), scaled so that its relative Frobenius error is that value: the same size of perturbation as the
    rounding, in a random direction. ``lm`` is not modified; the noise is seeded."""
    model = copy.deepcopy(lm.model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for pname, p in model.named_parameters():
            err = rel_error.get(pname, 0.0)
            if err > 0 and p.numel() > 0:
                noise = torch.randn(p.shape, generator=gen, dtype=torch.float64)
                noise *= err * float(p.double().norm()) / float(noise.norm())
                p.add_(noise.to(device=p.device, dtype=p.dtype))
    table = ",".join(f"{k}={v:.3e}" for k, v in sorted(rel_error.items()) if v > 0)
    return wrap_model(model, lm.tokenizer, name=f"{lm.name}-{name}", label=f"{lm.label}, {name}",
                      fingerprint=f"{lm.fingerprint}:{name}:seed{seed}:{config_hash({'rel_error': table})}",
                      note=f"Gaussian noise of each tensor's relative error ({name}, seed {seed})")
