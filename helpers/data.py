"""Test corpora (WikiText-103 test, One Billion Word test), filtering and seeded sampling.

Sources, in order: a local folder (the ``data_dir`` argument, else the ``METALEARN_DATA``
environment variable), else the Hugging Face hub through ``datasets``.
"""

from __future__ import annotations

import hashlib
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from helpers import CompendiumError

DATASETS = ("wikitext-103", "1bw")
LOCAL_FILES = {
    "wikitext-103": "wikitext-103/wiki.test.raw",
    "1bw": "1bw/news.en.heldout-00000-of-00050",
}
HUB_SOURCES = {
    "wikitext-103": ("Salesforce/wikitext", "wikitext-103-raw-v1", "test", "text"),
    "1bw": ("lm1b", None, "test", "text"),
}
MIN_WORDS = 10
N_1BW_SAMPLES = 5000
SAMPLE_SEED = 0


@dataclass
class FilterReport:
    """Counts before and after each filtering rule of one corpus."""

    dataset: str
    source: str
    lines: int
    blank: int
    headings: int
    short: int
    kept: int
    sampled: int

    def as_dict(self) -> dict:
        """Plain dict (for tables)."""
        return asdict(self)


def check_dataset(name: str) -> str:
    """Return ``name`` if it is a known corpus, else raise a one-line error."""
    if name not in DATASETS:
        raise CompendiumError(f"unknown dataset '{name}': choose one of {', '.join(DATASETS)}")
    return name


def data_dir(explicit: str | Path | None = None) -> Path | None:
    """The local data folder: ``explicit``, else ``$METALEARN_DATA``, else None (use the hub)."""
    value = explicit or os.environ.get("METALEARN_DATA")
    return Path(value).expanduser() if value else None


def read_lines(name: str, folder: str | Path | None = None) -> tuple[list[str], str]:
    """Raw lines of corpus ``name`` and a description of where they came from."""
    check_dataset(name)
    root = data_dir(folder)
    if root is not None:
        path = root / LOCAL_FILES[name]
        if not path.is_file():
            raise CompendiumError(
                f"{name}: {path} not found; put {LOCAL_FILES[name]} under {root} "
                f"(see shared/data/MANIFEST.md) or unset METALEARN_DATA to use the hub"
            )
        try:
            return path.read_text(encoding="utf-8").split("\n")[:-1], str(path)
        except (OSError, UnicodeDecodeError) as exc:
            raise CompendiumError(
                f"{name}: cannot read {path} ({exc}); replace it with a verified copy"
            ) from None
    repo, config, split, column = HUB_SOURCES[name]
    try:
        from datasets import load_dataset

        ds = load_dataset(repo, config, split=split)
    except Exception as exc:  # noqa: BLE001 - any hub failure becomes the same actionable message
        raise CompendiumError(
            f"{name}: no local folder given and the hub failed ({type(exc).__name__}); "
            f"set METALEARN_DATA to a folder holding {LOCAL_FILES[name]}"
        ) from None
    return [str(t) for t in ds[column]], f"hub:{repo}/{config or ''}/{split}"


def is_heading(line: str) -> bool:
    """WikiText heading lines look like `` = Title = `` or `` = = Section = = ``."""
    s = line.strip()
    return len(s) >= 2 and s.startswith("=") and s.endswith("=")


def filter_lines(name: str, lines: list[str], min_words: int = MIN_WORDS) -> tuple[list[str], dict]:
    """Apply the paper's rules: drop blank lines, WikiText headings and texts of < ``min_words`` words."""
    check_dataset(name)
    if not isinstance(min_words, int) or min_words < 1:
        raise CompendiumError(f"min_words must be a positive integer, got {min_words!r}")
    counts = {"lines": len(lines), "blank": 0, "headings": 0, "short": 0}
    kept = []
    for line in lines:
        text = line.strip()
        if not text:
            counts["blank"] += 1
        elif name == "wikitext-103" and is_heading(text):
            counts["headings"] += 1
        elif len(text.split()) < min_words:
            counts["short"] += 1
        else:
            kept.append(text)
    counts["kept"] = len(kept)
    return kept, counts


def sample_texts(texts: list[str], n: int | None, seed: int = SAMPLE_SEED) -> list[str]:
    """``n`` texts drawn without replacement with a fixed seed, in corpus order (all if n is None)."""
    if n is None or n >= len(texts):
        return list(texts)
    if n < 1:
        raise CompendiumError(f"sample size must be at least 1, got {n}")
    idx = sorted(random.Random(seed).sample(range(len(texts)), n))
    return [texts[i] for i in idx]


def load_filtered(
    name: str, folder: str | Path | None = None, min_words: int = MIN_WORDS, seed: int = SAMPLE_SEED
) -> tuple[list[str], FilterReport]:
    """The paper's evaluation texts: WikiText-103 test (all that pass) or 5,000 random 1BW test sentences."""
    lines, source = read_lines(name, folder)
    kept, counts = filter_lines(name, lines, min_words)
    texts = sample_texts(kept, N_1BW_SAMPLES if name == "1bw" else None, seed)
    return texts, FilterReport(dataset=name, source=source, sampled=len(texts), **counts)


def fingerprint_texts(texts: list[str]) -> str:
    """Short sha256 of a list of texts (order matters): the data part of a cache key."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def filtered_path(name: str, out_dir: str | Path) -> Path:
    """Where notebook 01 saves the filtered samples of ``name``."""
    return Path(out_dir) / f"{check_dataset(name)}.jsonl"


def save_filtered(name: str, texts: list[str], out_dir: str | Path) -> Path:
    """Write filtered texts as JSON lines (atomically: a killed run leaves no partial file)."""
    import json

    path = filtered_path(name, out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"id": i, "text": t}) + "\n")
    tmp.replace(path)
    return path


def load_samples(
    name: str, filtered_dir: str | Path = "data/filtered", folder: str | Path | None = None
) -> list[str]:
    """Filtered texts saved by notebook 01, else filtered afresh from the corpus."""
    import json

    path = filtered_path(name, filtered_dir)
    if path.is_file():
        return [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").splitlines()]
    return load_filtered(name, folder)[0]
