"""Results on disk keyed by a configuration hash, with a manifest; chunked and resumable.

A run directory ``<root>/<hash>/`` holds ``chunk_00000.npz``... (each written to a temporary file and
renamed, so a killed run never leaves a partial chunk) and ``manifest.json``, whose ``complete`` flag
is set only after the last chunk. Running the same configuration again reuses finished chunks.
"""

from __future__ import annotations

import json
import platform
import time
import zipfile
from pathlib import Path

import numpy as np

from helpers import CompendiumError
from helpers.paths import atomic_path, atomic_write_text, config_hash, repo_path


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine the numbers."""
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "numpy", "gguf", "accelerate"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


class RunStore:
    """Chunked results of one configuration under ``root/<config hash>``."""

    def __init__(self, root: str | Path, config: dict, create: bool = True):
        self.config = config
        self.key = config_hash(config)
        self.dir = repo_path(root) / self.key
        if create:
            self.dir.mkdir(parents=True, exist_ok=True)

    def chunk_path(self, index: int) -> Path:
        """Path of chunk ``index``."""
        return self.dir / f"chunk_{index:05d}.npz"

    def has_chunk(self, index: int) -> bool:
        """Whether chunk ``index`` was finished by this or an earlier run: a readable archive (a 0-byte or
        garbled file, e.g. from a full disk or a copy cut short, counts as missing and is recomputed)."""
        path = self.chunk_path(index)
        return path.is_file() and zipfile.is_zipfile(path)

    def save_chunk(self, index: int, arrays: dict[str, np.ndarray]) -> None:
        """Save one chunk atomically."""
        with atomic_path(self.chunk_path(index)) as tmp:
            np.savez(tmp, **arrays)

    def read_chunk(self, index: int) -> dict[str, np.ndarray]:
        """Chunk ``index`` as arrays; one-line error for an unreadable one."""
        try:
            with np.load(self.chunk_path(index)) as archive:
                return dict(archive)
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise CompendiumError(
                f"cached chunk {self.chunk_path(index).name} is unreadable ({type(exc).__name__}): delete the run "
                f"folder {self.dir} and run again (its other results are recomputed too)"
            ) from None

    def load_chunks(self, n_chunks: int) -> dict[str, np.ndarray]:
        """Concatenate chunks 0..n_chunks-1 key by key."""
        parts = [self.read_chunk(i) for i in range(n_chunks)]
        keys = parts[0].keys() if parts else []
        return {k: np.concatenate([p[k] for p in parts if k in p]) for k in keys}

    @property
    def manifest_path(self) -> Path:
        """Path of the manifest."""
        return self.dir / "manifest.json"

    def manifest(self) -> dict:
        """The manifest, or {} if none was written."""
        return json.loads(self.manifest_path.read_text()) if self.manifest_path.is_file() else {}

    def write_manifest(self, complete: bool, **extra) -> None:
        """Record configuration, versions, time and completeness."""
        body = {
            "key": self.key,
            "config": self.config,
            "versions": package_versions(),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "complete": complete,
            **extra,
        }
        atomic_write_text(self.manifest_path, json.dumps(body, indent=2, default=str))
