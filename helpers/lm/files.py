"""Checks of a model's local files before anything loads: GGUF headers (truncated or garbled files), a
folder's config.json and tokenizer files, and whether the model is a decoder-only causal LM. Each failure is
one :class:`~helpers.CompendiumError` line naming the file and what to do; nothing here imports torch.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from helpers import CompendiumError
from helpers import param_flag as _flag
from helpers.lm.families import ENCODER_FAMILIES
from helpers.lm.registry import REGISTRY

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "spiece.model", "vocab.txt")




def _read_exact(fh, n: int) -> bytes:
    data = fh.read(n)
    if len(data) < n:
        raise EOFError("unexpected end of file")
    return data


_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_data_end(path: Path) -> int:
    """Bytes a GGUF file must have to hold every tensor its header lists (parses header and metadata only).
    Raises EOFError, ValueError or struct.error on a malformed header."""
    import gguf

    size = path.stat().st_size
    with path.open("rb", buffering=1 << 20) as fh:

        def num(fmt: str):
            return struct.unpack("<" + fmt, _read_exact(fh, struct.calcsize(fmt)))[0]

        def string() -> bytes:
            n = num("Q")
            if n > size:
                raise ValueError("string length beyond the end of the file")
            return _read_exact(fh, n)

        def skip(kind: int) -> None:
            if kind in _GGUF_SCALARS:
                _read_exact(fh, struct.calcsize(_GGUF_SCALARS[kind]))
            elif kind == 8:
                string()
            elif kind == 9:
                item, count = num("I"), num("Q")
                if item in _GGUF_SCALARS:
                    if count * struct.calcsize(_GGUF_SCALARS[item]) > size:
                        raise ValueError("metadata array beyond the end of the file")
                    fh.seek(count * struct.calcsize(_GGUF_SCALARS[item]), 1)
                else:
                    for _ in range(count):
                        skip(item)
            else:
                raise ValueError(f"unknown metadata type {kind}")

        if _read_exact(fh, 4) != b"GGUF":
            raise ValueError("no GGUF magic number at the start")
        version = num("I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not supported (2 or 3)")
        n_tensors, n_kv = num("Q"), num("Q")
        if n_tensors > 1_000_000 or n_kv > 1_000_000:
            raise ValueError("implausible tensor or metadata count")
        alignment = 32
        for _ in range(n_kv):
            key, kind = string(), num("I")
            if key == b"general.alignment" and kind == 4:
                alignment = num("I")
            else:
                skip(kind)
        end = 0
        for _ in range(n_tensors):
            string()
            dims = [num("Q") for _ in range(num("I"))]
            block, type_size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType(num("I"))]
            count = 1
            for d in dims:
                count *= d
            end = max(end, num("Q") + count // block * type_size)
        start = -(-fh.tell() // alignment) * alignment
    return start + end


def check_gguf(path: str | Path, what: str | None = None) -> Path:
    """A readable, complete GGUF file (header parsed, size checked against its tensor table), else a one-line
    error saying to replace the file. ``what`` names it (e.g. the registry package to reinstall)."""
    p = Path(path)
    fix = what or "download the file again"
    if not p.is_file():
        raise CompendiumError(f"GGUF file {p} does not exist: check the path")
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise CompendiumError("GGUF models need the gguf package: pip install gguf accelerate") from None
    try:
        need = gguf_data_end(p)
    except (EOFError, ValueError, KeyError, struct.error, OverflowError, MemoryError) as exc:
        raise CompendiumError(f"{p} is not a readable GGUF file ({type(exc).__name__}: {exc}): {fix}") from None
    have = p.stat().st_size
    if have < need:
        raise CompendiumError(f"{p} is truncated: its tensors need {need:,} bytes, the file has {have:,}: {fix}")
    return p


def check_model_files(spec, key: str = "model", cli: bool = False) -> str:
    """The local files a model spec names, without loading anything: a ``.gguf`` file is complete; a folder
    holds a valid config.json, weights and tokenizer files; a registry model's file is installed and complete.
    A hub id passes (the hub is asked at load time)."""
    name = _flag(key, cli)
    if not isinstance(spec, str) or not spec.strip():
        raise CompendiumError(f"{name} must be a registry name, hub id, folder or .gguf file, got {spec!r}")
    p = Path(spec).expanduser()
    if p.suffix == ".gguf":
        check_gguf(p, "download the file again")
        return spec
    if p.is_dir():
        cfg = p / "config.json"
        if not cfg.is_file():
            raise CompendiumError(f"model folder {p} has no config.json: save the model with save_pretrained")
        try:
            body = json.loads(cfg.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            raise CompendiumError(f"{cfg} is not valid JSON ({type(exc).__name__}): the file is corrupt; save the "
                                  f"model again with save_pretrained") from None
        if not isinstance(body, dict):
            raise CompendiumError(f"{cfg} does not hold a configuration: save the model again with save_pretrained")
        family = str(body.get("model_type", "unknown"))
        if body.get("is_encoder_decoder") or (family in ENCODER_FAMILIES and not body.get("is_decoder")):
            raise CompendiumError(f"model '{spec}' ({family}) is not a decoder-only causal LM: use a model that "
                                  f"AutoModelForCausalLM supports (e.g. gpt2, Llama, Gemma, Pythia)")
        if not (any(p.glob("*.safetensors")) or any(p.glob("*.bin"))):
            raise CompendiumError(f"cannot load the weights of model folder {p}: it has no *.safetensors or *.bin "
                                  f"file; save the model with save_pretrained")
        if not any((p / f).is_file() for f in TOKENIZER_FILES):
            raise CompendiumError(f"model folder {p} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...): "
                                  f"save the tokenizer there too (tokenizer.save_pretrained)")
        return spec
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1 or p.exists():
        raise CompendiumError(f"model path '{spec}' does not exist: check the path")
    if _is_registry(spec):

        entry = REGISTRY[spec]
        check_gguf(entry.locate(), f"reinstall it with `{entry.install}`")
    return spec


def _is_registry(spec: str) -> bool:
    # registry names have no '/', hub ids usually do; only then import the (torch-importing) model module
    if "/" in spec:
        return False

    return spec in REGISTRY
