"""The model session of a run: each GGUF model dequantised once, its float weights kept on disk for the run.

A GGUF model's load is a dequantisation of every tensor (about a minute for a 1.5B model on this CPU). A run of
every notebook asks for each registry model's weights in several notebook kernels (02, 07, 08, 09, SmolLM2 in 05),
so ``make reproduce`` opens a session (:func:`weights_session`): the first load of a model in the session
dequantises it and keeps the float model as transformers saves it (safetensors) under the session folder, keyed by
the GGUF file's hash and the dtype; every later load, in any process that inherits the session's environment
variable, reads that copy (memory-mapped, seconds). A completed run removes the folder; a killed run keeps it, so
the rerun resumes without dequantising again. Outside a session nothing is kept (no disk is used).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from safetensors.torch import save_model
from torch import nn

from helpers.paths import atomic_path, model_cache

SESSION_ENV = "METALEARN_WEIGHTS_SESSION"  # the session's folder; set by weights_session, inherited by kernels


def default_session_dir() -> Path:
    """Where ``make reproduce`` keeps its session's float weights (beside the assembled GGUF files)."""
    return model_cache() / "session-weights"


def _folder(kwargs: dict, fingerprint: str, dtype: str) -> Path | None:
    """The session folder of one GGUF model in one dtype, or None (no session, or not a hashed GGUF file)."""
    root = os.environ.get(SESSION_ENV)
    if not root or "gguf_file" not in kwargs or not fingerprint.startswith("sha256:"):
        return None
    return Path(root) / f"{fingerprint.removeprefix('sha256:')}-{dtype}"


def kept_weights(kwargs: dict, fingerprint: str, dtype: str) -> Path | None:
    """The folder holding this session's float copy of a GGUF model, if one is there (a copy appears whole: it is
    written to a temporary folder and renamed)."""
    folder = _folder(kwargs, fingerprint, dtype)
    return folder if folder is not None and folder.is_dir() else None


def keep_weights(model: nn.Module, kwargs: dict, fingerprint: str, dtype: str) -> Path | None:
    """Save ``model`` (as loaded from its GGUF file) into the session, atomically; nothing outside a session or
    when the folder cannot be written (the run goes on, it only loads again)."""
    folder = _folder(kwargs, fingerprint, dtype)
    if folder is None or folder.is_dir():
        return folder
    try:
        with atomic_path(folder, directory=True) as tmp:
            # save_pretrained refuses a model loaded from GGUF (transformers marks it quantised): its tensors are
            # plain floats, so they are saved as they are (shared ones once, as safetensors' save_model does)
            model.config.save_pretrained(tmp)
            save_model(model, str(Path(tmp) / "model.safetensors"), metadata={"format": "pt"})
    except OSError as exc:
        print(f"model session: cannot keep the weights in {folder} ({exc}); the next load dequantises again")
        return None
    return folder


@contextmanager
def weights_session(folder: str | Path | None = None, keep: bool = False) -> Iterator[Path]:
    """Open a model session in ``folder`` (default :func:`default_session_dir`) for this process and the processes
    it starts; on a normal exit the folder is removed unless ``keep`` (on an error it stays: a rerun reuses it)."""
    path = Path(folder) if folder is not None else default_session_dir()
    before = os.environ.get(SESSION_ENV)
    os.environ[SESSION_ENV] = str(path)
    try:
        yield path
        if not keep:  # reached only when the block ended normally
            shutil.rmtree(path, ignore_errors=True)
    finally:
        if before is None:
            os.environ.pop(SESSION_ENV, None)
        else:
            os.environ[SESSION_ENV] = before
