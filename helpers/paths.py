"""Results on disk keyed by a configuration hash, with a manifest; chunked and resumable.

A run directory ``<root>/<hash>/`` holds ``chunk_00000.npz``... (each written to a temporary file and
renamed, so a killed run never leaves a partial chunk) and ``manifest.json``, whose ``complete`` flag
is set only after the last chunk. Running the same configuration again reuses finished chunks.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def repo_root() -> Path:
    """The repository root (the folder holding pyproject.toml), found upwards from this file: the one
    definition that the package, the CLI and the notebooks share (relative output, cache and data folders
    are taken from here, whatever the current directory). Without a checkout (a non-editable install), the
    current directory, or its parent when it is the ``notebooks`` folder papermill runs in."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    cwd = Path.cwd()
    return cwd.parent if cwd.name == "notebooks" else cwd


def repo_path(path: str | Path) -> Path:
    """``path`` if absolute, else relative to the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else repo_root() / p


_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file, memoised on (path, size, modification time)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _FILE_HASHES:
        h = hashlib.sha256()
        with p.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        _FILE_HASHES[key] = h.hexdigest()
    return _FILE_HASHES[key]


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to ``path`` through a temporary file and a rename."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
