"""Writing and reading GGUF files of a quantised GPT-2 model, for the tests only: they check that
:mod:`helpers.lm.quantise`'s in-memory round trip equals what ``gguf`` stores and dequantises."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFWriter
from gguf.quants import dequantize

from helpers.lm.quantise import _gguf_layout, _is_conv1d, _scheme, quantize_tensor, tensor_type

_TRANSPOSED_KEY = "compendium.transposed"


def write_gguf(model: torch.nn.Module, scheme: str, path: str | Path) -> None:
    """Write ``model``'s parameters to a GGUF file at ``path`` under ``scheme``: quantised tensors as raw GGUF
    blocks with their GGML type (in GGUF's layout, rows along the input), kept tensors as F32. Tensor names are
    the HF parameter names; the names of the transposed ``Conv1D`` weights are listed under the key
    ``compendium.transposed`` so :func:`read_gguf_weights` can undo the transposition."""
    scheme_plan = _scheme(scheme)
    params = list(model.named_parameters())
    types = {name: tensor_type(name, tuple(p.shape), scheme) for name, p in params}
    writer = GGUFWriter(str(path), arch="gpt2")
    writer.add_name(f"quantised ({scheme_plan.name} round trip)")
    writer.add_string("compendium.quant_scheme", scheme_plan.name)
    transposed = [name for name, _ in params if _is_conv1d(name)]
    if transposed:
        writer.add_array(_TRANSPOSED_KEY, transposed)
    for name, p in params:
        w = _gguf_layout(name, p)
        qtype = types[name]
        if qtype is None:
            writer.add_tensor(name, w)
        elif qtype == "F16":
            writer.add_tensor(name, quantize_tensor(w, qtype))
        else:
            writer.add_tensor(name, quantize_tensor(w, qtype), raw_dtype=GGMLQuantizationType[qtype])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def read_gguf_weights(path: str | Path) -> dict[str, np.ndarray]:
    """The tensors of a GGUF file written by :func:`write_gguf`, dequantised by ``gguf.quants.dequantize`` to
    float32, in HF layout and shape, by HF parameter name."""
    reader = GGUFReader(str(path))
    field = reader.fields.get(_TRANSPOSED_KEY)
    transposed = set(field.contents()) if field is not None else set()
    out = {}
    for t in reader.tensors:
        w = np.array(dequantize(t.data, t.tensor_type), dtype=np.float32)
        shape = tuple(int(s) for s in reversed(t.shape.tolist()))    # GGUF lists dims innermost first
        w = w.reshape(shape)
        out[t.name] = np.ascontiguousarray(w.T) if t.name in transposed else w
    return out
