"""A GGUF model's config and tokenizer, kept in the model cache under the file's hash after the first read.

A GGUF file's metadata holds the whole vocabulary: transformers parses it once for the config and once for the
tokenizer (7-28 s per read on this CPU for Qwen2.5's 152k and Gemma 3's 262k words). Kept as transformers saves
them, a skeleton (:func:`helpers.lm.load.load_model` with ``weights=False``) reads them in 0.4-3.4 s.
"""

from __future__ import annotations

from pathlib import Path

from helpers.paths import atomic_path, model_cache


def metadata_source(where: str, kwargs: dict, fingerprint: str) -> tuple[str, dict]:
    """Where to read a model's config and tokenizer: for a GGUF file whose copy is saved in the model cache
    (:func:`save_metadata`), that folder; else the model itself (a GGUF's metadata holds the whole vocabulary:
    parsing it costs ~7 s for Qwen2.5's 152k words, twice per load)."""
    folder = _metadata_folder(kwargs, fingerprint)
    if folder is not None and (folder / "config.json").is_file():
        return str(folder), {}
    return where, kwargs


def _metadata_folder(kwargs: dict, fingerprint: str) -> Path | None:
    if "gguf_file" not in kwargs or not fingerprint.startswith("sha256:"):
        return None
    return model_cache() / "gguf-metadata" / fingerprint.removeprefix("sha256:")


def save_metadata(kwargs: dict, fingerprint: str, config: object, tokenizer: object) -> None:
    """Keep a GGUF model's config and tokenizer, as transformers read them from the file, in the model cache under
    the file's hash (written once, atomically; a folder that cannot be written is skipped)."""
    folder = _metadata_folder(kwargs, fingerprint)
    if folder is None or (folder / "config.json").is_file():
        return
    try:
        with atomic_path(folder, directory=True) as tmp:
            tokenizer.save_pretrained(tmp)
            config.save_pretrained(tmp)
    except OSError:
        pass
