"""Load any decoder-only causal LM and expose a uniform view of its parts.

``load_model`` takes a short registry name (``smollm2-135m``, ``gemma-3-270m``), a Hugging Face
hub id (``gpt2``, ``meta-llama/Llama-2-7b-hf``), a local directory saved with
``save_pretrained``, or a ``.gguf`` file. It returns a :class:`LoadedModel` that knows the
model's blocks, final norm, LM head and how to turn a residual state into logits, whatever the
family (GPT-2, GPT-NeoX/Pythia, Llama/Mistral/Qwen2, Gemma/Gemma 2/Gemma 3, OPT).
"""

from __future__ import annotations

import copy
import ctypes
import gc
import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from helpers import CompendiumError
from helpers.checks import check_device, check_device_map
from helpers.lm.families import BLOCK_PATHS, ENCODER_FAMILIES, NORM_PATHS, context_length, needs_bos
from helpers.lm.families import family as family_row
from helpers.lm.files import check_gguf, check_model_files
from helpers.lm.metadata import metadata_source, save_metadata
from helpers.lm.registry import DEFAULT_MODEL, REGISTRY
from helpers.lm.session import keep_weights, kept_weights
from helpers.paths import file_sha256

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
LOAD_LOG_ENV = "METALEARN_LOAD_LOG"  # a file: every load of weights appends "spec<TAB>seconds" (make reproduce counts)






def free_memory() -> None:
    """Collect garbage and hand freed heap pages back to the system (glibc's ``malloc_trim``; elsewhere only the
    collection): between batches and models, so that the resident size is what is live, not a high-water mark."""
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _get_attr_path(obj: object, path: str) -> object | None:
    for part in path.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


@dataclass
class LoadedModel:
    """A causal LM with a uniform view of its parts.

    ``blocks[l]`` is decoder block ``l``; the residual state at layer ``l`` (for ``l < n_layers``)
    is the input of block ``l`` (layer 0 = embeddings) and layer ``n_layers`` is the output of the
    last block *before* the final norm. ``logits(h)`` applies final norm, LM head and any logit
    soft-capping exactly as the model does.
    """

    model: nn.Module
    tokenizer: object
    name: str
    label: str
    family: str
    blocks: nn.ModuleList
    final_norm: nn.Module
    lm_head: nn.Module
    fingerprint: str
    note: str = ""
    prepend_bos: bool = False
    softcap: float | None = None
    extra: dict = field(default_factory=dict)

    @property
    def skeleton(self) -> bool:
        """Whether this is a skeleton (:func:`load_model` with ``weights=False``): the architecture on the meta
        device, config, tokenizer and fingerprint, no weights. Enough to name a cached run and read it; any
        computation on it fails."""
        return bool(self.extra.get("skeleton"))

    @property
    def n_layers(self) -> int:
        """Number of decoder blocks L."""
        return len(self.blocks)

    @property
    def d_model(self) -> int:
        """Width of the residual stream."""
        return int(self.model.config.hidden_size)

    @property
    def n_params(self) -> int:
        """Number of parameters, tied embeddings counted once: a registry model's released count (its GGUF file
        may store the tied head as a second tensor), else the model's distinct parameter tensors."""
        return self.extra.get("release_params") or sum(p.numel() for p in self.model.parameters())

    @property
    def context(self) -> int | None:
        """The context length from the config (:func:`helpers.lm.families.context_length`), None if unknown."""
        return context_length(self.model.config)

    @property
    def input_device(self) -> torch.device:
        """Device of the token embeddings (where input ids must go)."""
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        """Parameter dtype of the model."""
        return self.model.get_input_embeddings().weight.dtype

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """Final norm + LM head (+ soft-capping) applied to residual states ``h`` (..., D)."""
        dev = self.final_norm.weight.device if hasattr(self.final_norm, "weight") else h.device
        out = self.lm_head(self.final_norm(h.to(dev)).to(self.lm_head.weight.device))
        if self.softcap:
            out = torch.tanh(out / self.softcap) * self.softcap
        return out

    def call_block(self, index: int, hidden: torch.Tensor, kwargs: dict) -> torch.Tensor:
        """Run block ``index`` on ``hidden`` with the keyword arguments of a real model call."""
        block = self.blocks[index]
        out = block(hidden, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    def describe(self) -> str:
        """One line naming the model, its depth and how its weights were obtained."""
        depth = f"{self.n_layers} layers"  # local models' labels already state it: no second parenthesis
        text = self.label if depth in self.label else f"{self.label} ({self.family}, {depth})"
        return f"{text}; {self.note}" if self.note else text

    def encode(self, texts: list[str], max_tokens: int) -> list[list[int]]:
        """Tokenise ``texts`` (BOS handled per family), truncated to ``max_tokens`` tokens each."""
        ids = self.tokenizer(list(texts), add_special_tokens=True)["input_ids"]
        bos = getattr(self.tokenizer, "bos_token_id", None)
        out = []
        for row in ids:
            row = list(row)
            if self.prepend_bos and bos is not None and (not row or row[0] != bos):
                row = [bos] + row
            out.append(row[:max_tokens])
        return out


def _family(config: object) -> str:
    return str(getattr(config, "model_type", "unknown"))


def _state_fingerprint(model: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return "state:" + h.hexdigest()[:16]


def wrap_model(
    model: nn.Module,
    tokenizer: object = None,
    name: str = "custom",
    label: str | None = None,
    fingerprint: str | None = None,
    note: str = "",
) -> LoadedModel:
    """Give an in-memory causal LM (e.g. a tiny test model or a freshly trained one) the uniform view."""
    config = model.config
    family_name = _family(config)
    row = family_row(family_name)
    block_paths = (row.blocks,) if row else BLOCK_PATHS
    norm_paths = (row.final_norm,) if row else NORM_PATHS
    blocks = next((b for p in block_paths if (b := _get_attr_path(model, p)) is not None), None)
    norm = next((n for p in norm_paths if (n := _get_attr_path(model, p)) is not None), None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    missing = [
        what
        for what, obj in (("decoder blocks", blocks), ("final norm", norm), ("LM head", head))
        if obj is None
    ]
    if missing:
        raise CompendiumError(
            f"model '{name}' ({family_name}) is not supported: cannot find its {', '.join(missing)} "
            f"(looked at {', '.join(block_paths + norm_paths)}); add its row to helpers/lm/families.py"
        )
    model.eval()
    return LoadedModel(
        model=model,
        tokenizer=tokenizer,
        name=name,
        label=label or name,
        family=family_name,
        blocks=blocks,
        final_norm=norm,
        lm_head=head,
        fingerprint=fingerprint or _state_fingerprint(model),
        note=note,
        prepend_bos=needs_bos(family_name),
        softcap=getattr(config, "final_logit_softcapping", None),
    )


def _check_dtype(dtype: str) -> torch.dtype | str:
    if dtype == "auto":
        return "auto"
    if dtype not in DTYPES:
        raise CompendiumError(f"dtype '{dtype}' is not one of {sorted(DTYPES) + ['auto']}")
    return DTYPES[dtype]


def _check_device(device: str) -> str:
    return check_device(device)


def resolve_spec(spec: str) -> tuple[str, dict, str, str, str]:
    """Turn a model spec into (path or hub id, from_pretrained kwargs, label, note, fingerprint)."""
    if not isinstance(spec, str) or not spec.strip():
        raise CompendiumError(f"model must be a non-empty string, got {spec!r}")
    if spec in REGISTRY:
        entry = REGISTRY[spec]
        path = check_gguf(entry.locate(), f"reinstall it with `{entry.install}`")
        return (
            str(path.parent),
            {"gguf_file": path.name},
            entry.label,
            entry.note,
            "sha256:" + file_sha256(path)[:16],
        )
    p = Path(spec).expanduser()
    if p.suffix == ".gguf" or p.is_dir():
        check_model_files(spec)  # complete GGUF; folder with a valid config.json, weights and tokenizer files
    if p.suffix == ".gguf":
        note = "GGUF dequantised to float: an approximation of the released weights"
        return str(p.parent), {"gguf_file": p.name}, p.stem, note, "sha256:" + file_sha256(p)[:16]
    if p.is_dir():
        weights = sorted(p.glob("*.safetensors")) or sorted(p.glob("*.bin"))
        digest = hashlib.sha256()
        for w in weights:
            digest.update(file_sha256(w).encode())
        return str(p), {}, p.name, "", "sha256:" + digest.hexdigest()[:16]
    if spec.startswith((".", "/", "~")) or spec.count("/") > 1:
        raise CompendiumError(f"model path '{spec}' does not exist: check the path")
    return spec, {}, spec, "", ""


def load_model(
    spec: str = DEFAULT_MODEL,
    device: str = "cpu",
    dtype: str = "float32",
    device_map: str | dict | None = None,
    attn_implementation: str | None = None,
    weights: bool = True,
) -> LoadedModel:
    """Load a decoder-only causal LM by registry name, hub id, local directory or ``.gguf`` file.

    ``dtype`` is ``float32``, ``bfloat16``, ``float16`` or ``auto``; ``device_map="auto"`` spreads a
    large model over the visible GPUs (accelerate) and then ``device`` is ignored.
    ``weights=False`` returns a skeleton (:attr:`LoadedModel.skeleton`: config, tokenizer and the same fingerprint,
    the architecture on the meta device) in about a second: what reading a cached run needs (a 1.5B model's load
    is about a minute). Not for ``dtype="auto"`` or a ``device_map`` (their dtype is the checkpoint's).
    Raises :class:`CompendiumError` (one line, what to do) on bad input before any heavy work.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    torch_dtype = _check_dtype(dtype)
    if device_map is None:
        _check_device(device)
    else:
        check_device_map(device_map)
    where, kwargs, label, note, fingerprint = resolve_spec(spec)
    local = Path(where).exists()
    meta = metadata_source(where, kwargs, fingerprint)
    try:
        config = AutoConfig.from_pretrained(meta[0], **meta[1])
    except Exception as exc:  # noqa: BLE001 - a local file that does not parse, or a hub miss: one line each
        first = _first_line(exc)
        if local:
            raise CompendiumError(
                f"cannot read the configuration of local model '{spec}' ({first}): the file is corrupt or not a "
                f"model; save it again with save_pretrained or replace the .gguf file"
            ) from None
        if not isinstance(exc, (OSError, ValueError)):
            raise
        raise CompendiumError(
            f"cannot load model '{spec}': it is not a registry name ({', '.join(REGISTRY)}), a local directory "
            f"or .gguf file, and the hub did not provide it ({first}); pass a local path or go online"
        ) from None
    family = _family(config)
    encoder_only = family in ENCODER_FAMILIES and not getattr(config, "is_decoder", False)
    if getattr(config, "is_encoder_decoder", False) or encoder_only or family not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise CompendiumError(
            f"model '{spec}' ({family}) is not a decoder-only causal LM: use a model that "
            f"AutoModelForCausalLM supports (e.g. gpt2, Llama, Gemma, Pythia)"
        )
    load_kwargs = dict(kwargs)
    if torch_dtype != "auto":
        load_kwargs["dtype"] = torch_dtype
    if device_map is not None:
        load_kwargs["device_map"] = device_map
    if attn_implementation is not None:
        load_kwargs["attn_implementation"] = attn_implementation
    if not weights:
        if torch_dtype == "auto" or device_map is not None:
            raise CompendiumError("a skeleton (weights=False) needs a named dtype and no device_map")
        lm = _skeleton(spec, meta, config, torch_dtype, label, note, fingerprint)
        lm.extra["device"] = device  # where its weights would go: a twin built from it goes there
        return lm
    start = time.time()
    kept = kept_weights(kwargs, fingerprint, dtype) if device_map is None else None
    if kept:  # this model session dequantised the GGUF file already: read its float copy
        where, load_kwargs = str(kept), {k: v for k, v in load_kwargs.items() if k != "gguf_file"}
    model = _weights(spec, where, load_kwargs, local)
    if kept is None and device_map is None:
        keep_weights(model, kwargs, fingerprint, dtype)  # a model session keeps the dequantised copy
    if device_map is None:
        model = model.to(device)
    lm = _finish(spec, meta, config, model, label, note, fingerprint)
    if os.environ.get(LOAD_LOG_ENV):
        with open(os.environ[LOAD_LOG_ENV], "a", encoding="utf-8") as fh:
            fh.write(f"{spec}\t{time.time() - start:.1f}\t{'reread' if kept else 'load'}\n")
    return lm


def _weights(spec: str, where: str, load_kwargs: dict, local: bool) -> nn.Module:
    """``from_pretrained`` with its failures as one line (corrupt or incomplete weights, whatever the loader
    raises)."""
    from transformers import AutoModelForCausalLM

    try:
        return AutoModelForCausalLM.from_pretrained(where, **load_kwargs)
    except Exception as exc:  # noqa: BLE001
        if not local and not isinstance(exc, OSError):
            raise
        fix = "save the model again or replace the file" if local else "check the files or go online"
        raise CompendiumError(f"cannot load the weights of '{spec}' ({_first_line(exc)}): {fix}") from None


def _finish(spec: str, meta: tuple[str, dict], config: object, model: nn.Module, label: str, note: str,
            fingerprint: str) -> LoadedModel:
    """The uniform view of a loaded (or skeleton) ``model`` with its checked tokenizer (read from ``meta``,
    :func:`metadata_source`) and fingerprint."""
    tokenizer = _read_tokenizer(spec, *meta)
    save_metadata(meta[1], fingerprint, config, tokenizer)
    if not tokenizer("The tokenizer works.", add_special_tokens=False)["input_ids"]:
        raise CompendiumError(f"the tokenizer of '{spec}' turns text into no tokens (its vocabulary files are "
                              f"missing): save the tokenizer with the model (tokenizer.save_pretrained)")
    if not fingerprint:
        fingerprint = "hub:" + str(getattr(config, "_commit_hash", None) or meta[0])
    lm = wrap_model(model, tokenizer, name=spec, label=label, fingerprint=fingerprint, note=note)
    if spec in REGISTRY:  # its GGUF file may store a tied head as a tensor of its own (Qwen2.5's do)
        lm.extra["release_params"] = int(REGISTRY[spec].params)
    return lm


def _skeleton(spec: str, meta: tuple[str, dict], config: object, dtype: torch.dtype, label: str, note: str,
              fingerprint: str) -> LoadedModel:
    """The architecture of ``config`` on the meta device (no weights, no initialisation) as a LoadedModel."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):  # a copy: from_config records the dtype in the config it is given
        model = AutoModelForCausalLM.from_config(copy.deepcopy(config), dtype=dtype)
    lm = _finish(spec, meta, config, model, label, note, fingerprint)
    lm.extra["skeleton"] = True
    return lm


def _read_tokenizer(spec: str, where: str, kwargs: dict):
    """The tokenizer at a resolved ``where`` (:func:`resolve_spec`); one line naming ``spec`` if it cannot load."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(where, **kwargs)
    except Exception as exc:  # noqa: BLE001
        if not Path(where).exists() and not isinstance(exc, (OSError, ValueError)):
            raise
        raise CompendiumError(f"cannot load the tokenizer of '{spec}' ({_first_line(exc)}): save the tokenizer "
                              f"with the model (tokenizer.save_pretrained)") from None


def load_tokenizer(spec: str = DEFAULT_MODEL):
    """The tokenizer of ``spec`` (registry name, hub id, local directory or ``.gguf`` file) without its weights:
    what notebook 01 needs for token lengths (loading the whole model for it cost a model load)."""
    where, kwargs, _, _, fingerprint = resolve_spec(spec)
    return _read_tokenizer(spec, *metadata_source(where, kwargs, fingerprint))
