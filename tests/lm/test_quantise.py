"""GGUF weight quantisation (helpers/quantise.py): the Q4_K quantiser against llama.cpp's reference, the error
bounds of its grid, the legacy types through gguf, the schemes on tiny GPT-2 models and the GGUF file round trip."""

from __future__ import annotations

import hashlib
import time

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType, GGUFReader
from gguf.quants import Q4_K, dequantize, quantize
from gguf_files import read_gguf_weights, write_gguf

from helpers import CompendiumError
from helpers.lm.load import wrap_model
from helpers.lm.quantise import (
    SCHEMES,
    quantise_model,
    quantised_twin,
    quantize_q4_k,
    roundtrip,
    tensor_type,
)

torch.set_num_threads(1)


def _gauss(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, cols)).astype(np.float32)


def _rel_rms(x: np.ndarray, x_hat: np.ndarray) -> float:
    return float(np.sqrt(np.mean((x.astype(np.float64) - x_hat) ** 2) / np.mean(x.astype(np.float64) ** 2)))


# ------------------------------------------------------------------------------------------------- Q4_K


def _kat_input() -> np.ndarray:
    """16 super-blocks built from a 32-bit LCG with float64 arithmetic only (the same bits on every platform and
    numpy version): Gaussian-like sums of uniforms at several scales, outliers, zero and constant sub-blocks,
    one-signed rows and values on a coarse grid (rounding ties)."""
    state, u = 20240601, []
    for _ in range(4 * 16 * 256):
        state = (1664525 * state + 1013904223) % 2**32
        u.append(state)
    g = np.array(u, dtype=np.float64).reshape(-1, 4).sum(axis=1) / 2.0**32 - 2.0
    g = g.reshape(16, 256) * np.array([1, 0.02, 1e-3, 30, 1, 1, 1, 1, 0.5, 2, 1, 1, 1, 1, 1, 1])[:, None]
    g[4, ::37] *= 20.0
    g[5, :32] = 0.0
    g[5, 32:64] = 0.75
    g[5, 64:96] = -0.375
    g[6] = np.abs(g[6]) + 0.25
    g[7] = -np.abs(g[7]) - 0.25
    g[8, :128] = 0.0
    g[9] = np.round(g[9] * 4) / 4
    return g.astype(np.float32)


# SHA-256 of the bytes of llama.cpp's quantize_row_q4_K_ref (ggml/src/ggml-quants.c, as vendored in
# ollama/ollama at 0ee5ff70) on _kat_input(), compiled with gcc -O2 -ffp-contract=off on x86-64.
_KAT_SHA256 = "0a63afb407b24c351385bd0c3f9239b3bf370f50357ff1226b5b0e6a29cc86a2"


def test_q4_k_bytes_equal_llama_cpp_reference():
    blocks = quantize_q4_k(_kat_input())
    assert blocks.shape == (16, 144) and blocks.dtype == np.uint8
    assert hashlib.sha256(blocks.tobytes()).hexdigest() == _KAT_SHA256


def _decode_q4_k(blocks: np.ndarray) -> np.ndarray:
    """Independent decoding, transcribing llama.cpp's dequantize_row_q4_K and get_scale_min_k4 element by
    element (not gguf's vectorised unpacking)."""
    out = []
    for blk in blocks.reshape(-1, 144):
        d = np.frombuffer(blk[0:2].tobytes(), dtype=np.float16)[0].astype(np.float32)
        dmin = np.frombuffer(blk[2:4].tobytes(), dtype=np.float16)[0].astype(np.float32)
        s, q = [int(v) for v in blk[4:16]], [int(v) for v in blk[16:144]]

        def scale_min(j: int, s: list[int] = s) -> tuple[int, int]:
            if j < 4:
                return s[j] & 63, s[j + 4] & 63
            return (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4), (s[j + 4] >> 4) | ((s[j] >> 6) << 4)

        for chunk in range(4):
            for half in range(2):
                sc, m = scale_min(2 * chunk + half)
                dl, ml = d * np.float32(sc), dmin * np.float32(m)
                for byte in q[32 * chunk: 32 * chunk + 32]:
                    level = (byte >> (4 * half)) & 0xF
                    out.append(dl * np.float32(level) - ml)
    return np.array(out, dtype=np.float32)


def test_q4_k_gguf_dequantize_equals_own_decoding():
    x = np.concatenate([_gauss(1, 512, seed=3).ravel() * 0.05, _kat_input()[4:6].ravel()])[None, :]
    blocks = quantize_q4_k(x)
    assert blocks.shape == (1, 4 * 144)
    via_gguf = dequantize(blocks, GGMLQuantizationType.Q4_K)
    assert np.array_equal(via_gguf.ravel(), _decode_q4_k(blocks))
    assert np.array_equal(roundtrip(x, "Q4_K"), via_gguf)


def _fields(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Step ``d*sc`` and offset ``-dmin*m`` of every sub-block, [n_super, 8]."""
    blk = blocks.reshape(-1, 144)
    d = blk[:, 0:2].copy().view(np.float16).astype(np.float32)
    dmin = blk[:, 2:4].copy().view(np.float16).astype(np.float32)
    sc, m = Q4_K.get_scale_min(blk[:, 4:16].copy())
    return d * sc.astype(np.float32), -(dmin * m.astype(np.float32))


def test_q4_k_error_within_the_6_bit_scale_grid():
    x = _gauss(32, 1024, seed=1)
    blocks = quantize_q4_k(x)
    step, lo = _fields(blocks)
    hi = lo + 15 * step
    xs = x.reshape(-1, 8, 32)
    err = np.abs(xs - roundtrip(x, "Q4_K").reshape(-1, 8, 32))
    assert (step > 0).all()
    # the quants are re-rounded to the nearest level of the 6-bit-scaled grid: within half a step inside the
    # grid's range, and at the nearest end outside it (the searched scale/min may trim extremes)
    outside = np.maximum(np.maximum(lo[..., None] - xs, xs - hi[..., None]), 0)
    bound = np.maximum(step[..., None] / 2, outside)
    assert (err <= bound * (1 + 1e-5) + 1e-7).all()
    # trimming is the exception and stays within about a step (a plain min/max grid would never trim)
    assert 0 < (outside > 0).mean() < 0.1
    assert (err <= 1.25 * step[..., None]).all()


def test_q4_k_rms_error_on_gaussian_rows():
    # Q4_1 spans each block's [min, max] (about 4.1 sigma for 32 normals) with 15 steps: relative RMS error
    # ~ 4.1/15/sqrt(12) = 0.079. Q4_K's weighted scale/min search trims the extremes and gains ~10 %, while its
    # 6-bit scales cost little: expected ~0.071, and never worse than Q4_1 by more than a small margin.
    x = _gauss(128, 1024, seed=2)
    q4k, q41 = _rel_rms(x, roundtrip(x, "Q4_K")), _rel_rms(x, roundtrip(x, "Q4_1"))
    assert 0.074 < q41 < 0.084
    assert 0.064 < q4k < 0.077
    assert q4k < 1.02 * q41


def test_q4_k_constant_and_zero_rows():
    c = np.array([0.0, 0.7, -1.3, 1e-3, -2e-4, 123.0], dtype=np.float32)
    x = np.repeat(c[:, None], 512, axis=1)
    x_hat = roundtrip(x, "Q4_K")
    assert np.array_equal(x_hat[0], x[0])                                     # zeros stay exactly zero
    for row, value in zip(x_hat[1:], c[1:], strict=True):
        assert len(np.unique(row)) == 1                                       # a constant stays constant
        # within fp16 precision: d = fp16(c/(15*63)) (c > 0) or dmin = fp16(|c|/63) (c < 0), times 945 or 63
        assert abs(row[0] - value) <= 945 * (abs(value) / 945 * 2.0**-11 + 2.0**-25)


def test_q4_k_layout_shape_and_speed():
    x = _gauss(128, 512, seed=4)
    t0 = time.perf_counter()
    blocks = quantize_q4_k(x)
    elapsed = time.perf_counter() - t0
    assert blocks.shape == (128, 2 * 144) and elapsed < 1.0
    # quantisation is row by row: a row's bytes do not depend on the other rows
    assert np.array_equal(quantize_q4_k(x[5:6]), blocks[5:6])
    assert np.array_equal(quantize_q4_k(x.reshape(2, 64, 512)).reshape(128, -1), blocks)


# ------------------------------------------------------------------------------------------ legacy types


@pytest.mark.parametrize("qtype", ["Q4_1", "Q5_0", "Q8_0"])
def test_legacy_types_go_through_gguf(qtype):
    x = _gauss(16, 256, seed=5)
    t = GGMLQuantizationType[qtype]
    assert np.array_equal(roundtrip(x, qtype), dequantize(quantize(x, t), t))


def test_error_ordering_on_random_data():
    x = _gauss(64, 512, seed=6)
    errors = {q: _rel_rms(x, roundtrip(x, q)) for q in ("Q8_0", "Q5_0", "Q4_K", "Q4_1")}
    assert errors["Q8_0"] < errors["Q5_0"] < errors["Q4_1"]
    assert errors["Q8_0"] < 0.01 and errors["Q5_0"] < 0.05 and errors["Q4_1"] < 0.09


def test_bad_type_and_row_length():
    x = _gauss(2, 256)
    with pytest.raises(CompendiumError, match="unknown quantisation type"):
        roundtrip(x, "Q3_K")
    with pytest.raises(CompendiumError, match="multiple of 256"):
        roundtrip(_gauss(2, 96), "Q4_K")
    with pytest.raises(CompendiumError, match="multiple of 32"):
        roundtrip(_gauss(2, 48), "Q8_0")
    with pytest.raises(CompendiumError, match="multiple of 256"):
        quantize_q4_k(_gauss(1, 300))
    with pytest.raises(CompendiumError, match="unknown quantisation scheme"):
        tensor_type("transformer.h.0.mlp.c_fc.weight", (64, 256), "Q2_K")
    with pytest.raises(CompendiumError, match="not a multiple of 32"):
        tensor_type("transformer.h.0.mlp.c_fc.weight", (48, 192), "Q4_1")
    with pytest.raises(CompendiumError, match="not a gpt2 parameter"):
        tensor_type("model.layers.0.mlp.down_proj.weight", (64, 256), "Q4_1")
    with pytest.raises(CompendiumError, match="no GGUF round trip for model family 'opt'"):
        tensor_type("model.decoder.layers.0.fc1.weight", (64, 256), "Q4_1", family="opt")


# ------------------------------------------------------------------------------------------ tiny models


def _tiny_gpt2(n_embd: int) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=n_embd, n_positions=32, vocab_size=64)
    return GPT2LMHeadModel(cfg).eval()


_CACHE: dict = {}


def _quantised(n_embd: int, scheme: str):
    """(original, its state before quantising, quantised copy, table), computed once per module."""
    key = (n_embd, scheme)
    if key not in _CACHE:
        if n_embd not in _CACHE:
            _CACHE[n_embd] = _tiny_gpt2(n_embd)
        model = _CACHE[n_embd]
        before = {k: v.clone() for k, v in model.state_dict().items()}
        quantised, table = quantise_model(model, scheme)
        _CACHE[key] = (model, before, quantised, table)
    return _CACHE[key]


def _is_block_matrix(name: str) -> bool:
    return name.endswith(("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight"))


@pytest.mark.parametrize("n_embd", [256, 64])
@pytest.mark.parametrize("scheme", ["Q4_K_M", "Q4_1"])
def test_scheme_types(n_embd, scheme):
    _, _, _, table = _quantised(n_embd, scheme)
    types = dict(zip(table["name"], table["type"], strict=True))
    for name, shape in zip(table["name"], table["shape"], strict=True):
        if _is_block_matrix(name):
            expected = ("Q4_K" if shape[0] % 256 == 0 else "Q5_0") if scheme == "Q4_K_M" else "Q4_1"
        elif name == "transformer.wte.weight":
            expected = "Q8_0"
        else:
            expected = "F32"
        assert types[name] == expected, name
    assert "lm_head.weight" not in types                                      # tied: one tensor
    if scheme == "Q4_K_M":
        matrix_types = {t for n, t in types.items() if _is_block_matrix(n)}
        assert matrix_types == ({"Q4_K"} if n_embd == 256 else {"Q4_K", "Q5_0"})


@pytest.mark.parametrize("n_embd", [256, 64])
@pytest.mark.parametrize("scheme", ["Q4_K_M", "Q4_1"])
def test_quantise_model_weights(n_embd, scheme):
    model, before, quantised, table = _quantised(n_embd, scheme)
    # the original is untouched
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    # the LM head stays tied to the token embedding
    assert quantised.lm_head.weight is quantised.transformer.wte.weight
    params = dict(quantised.named_parameters())
    original = dict(model.named_parameters())
    for row in table.itertuples():
        new, old = params[row.name].detach().numpy(), original[row.name].detach().numpy()
        if row.type == "F32":
            assert np.array_equal(new, old), row.name                       # norms, biases, wpe: bit-identical
            continue
        gguf_layout = old.T if _is_block_matrix(row.name) else old
        expected = roundtrip(np.ascontiguousarray(gguf_layout), row.type)
        assert np.array_equal(new, expected.T if _is_block_matrix(row.name) else expected), row.name
        assert row.rel_error == pytest.approx(np.linalg.norm(new - old) / np.linalg.norm(old), rel=1e-4)
        assert 0 < row.rel_error < {"Q8_0": 0.01, "Q5_0": 0.06, "Q4_K": 0.09, "Q4_1": 0.1}[row.type]
        if row.type in ("Q4_K", "Q4_1") and _is_block_matrix(row.name):
            # 4-bit blocks run along the input dimension (dim 0 of a Conv1D weight): at most 16 levels per
            # 32 inputs of one output; along the output dimension there is no such limit
            levels_in = max(len(np.unique(new[i:i + 32, j])) for i in range(0, new.shape[0], 32)
                            for j in range(0, new.shape[1], 7))
            levels_out = max(len(np.unique(new[i, j:j + 32])) for i in range(0, new.shape[0], 7)
                             for j in range(0, new.shape[1], 32))
            assert levels_in <= 16 < levels_out, row.name


@pytest.mark.parametrize("n_embd", [256, 64])
@pytest.mark.parametrize("scheme", ["Q4_K_M", "Q4_1"])
def test_logits_change_but_stay_close(n_embd, scheme):
    model, _, quantised, _ = _quantised(n_embd, scheme)
    ids = torch.randint(0, 64, (2, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a, b = model(ids).logits, quantised(ids).logits
    rel = float((a - b).norm() / a.norm())
    assert 0 < rel < 0.15


@pytest.mark.parametrize("scheme", ["Q4_K_M", "Q4_1"])
def test_gguf_file_round_trip(tmp_path, scheme):
    model, _, quantised, table = _quantised(64, scheme)
    path = tmp_path / f"tiny-{scheme}.gguf"
    write_gguf(model, scheme, path)
    loaded = read_gguf_weights(path)
    params = dict(quantised.named_parameters())
    assert set(loaded) == set(params)
    for name, p in params.items():
        assert loaded[name].dtype == np.float32
        assert np.array_equal(loaded[name], p.detach().numpy()), name
    file_types = {t.name: t.tensor_type.name for t in GGUFReader(str(path)).tensors}
    assert file_types == dict(zip(table["name"], table["type"], strict=True))


def test_quantised_twin():
    model, _, quantised, table = _quantised(64, "Q4_K_M")
    lm = wrap_model(model, None, name="tiny", label="tiny GPT-2", fingerprint="fp0")
    twin = quantised_twin(lm, "Q4_K_M")
    assert twin.name == "tiny-q4_k_m" and twin.label == "tiny GPT-2, Q4_K_M round trip"
    assert twin.fingerprint.startswith("fp0:Q4_K_M:gguf") and twin.fingerprint.endswith(":code1")
    assert "Q4_K" in twin.note and "Q5_0" in twin.note and "Q8_0" in twin.note
    assert twin.model is not model and twin.n_layers == lm.n_layers
    for (name, p), q in zip(twin.model.named_parameters(), quantised.parameters(), strict=True):
        assert torch.equal(p, q), name
    assert set(SCHEMES) == {"Q4_1", "Q4_K_M"}


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_llama_like_round_trip_rounds_every_matrix_and_keeps_the_rest(family):
    """SmolLM2 and Qwen are Llama-like: nn.Linear matrices [out, in] (rows of length in, not transposed)."""
    from conftest import tiny_model

    from helpers.lm.quantise import quantise_model

    lm = tiny_model(family)
    model, table = quantise_model(lm.model, "Q4_1")
    types = dict(zip(table.name, table.type, strict=True))
    assert types["model.layers.0.self_attn.q_proj.weight"] == "Q4_1"
    assert types["model.embed_tokens.weight"] == "Q8_0" and types["model.norm.weight"] == "F32"
    mats = table[table.type == "Q4_1"]
    assert len(mats) == 7 * lm.n_layers and mats.rel_error.between(0.01, 0.3).all()
    before, after = dict(lm.model.named_parameters()), dict(model.named_parameters())
    name = "model.layers.1.mlp.down_proj.weight"
    w, w_hat = before[name].detach().numpy(), after[name].detach().numpy()
    # each GGUF block of 32 along the input dimension takes at most 16 levels
    assert all(len(np.unique(row)) <= 16 for row in w_hat.reshape(-1, 32)[:20])
    assert not np.array_equal(w, w_hat)
