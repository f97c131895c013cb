"""The paper's filter and seeded samples (Sec. 5.1): texts of at least ``min_words`` words, headings dropped,
a seeded random sample, and a filtered-sample cache keyed by the source file's checksum and the rules (written
atomically; a stale or partial cache is never read).
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

from helpers import CompendiumError
from helpers.corpus.sources import check_dataset, corpus_source, data_dir, read_corpus
from helpers.paths import FILTERED_DIR, atomic_path, repo_path

MIN_WORDS = 10


N_1BW_SAMPLES = 5000


SAMPLE_SEED = 0




@dataclass
class FilterReport:
    """Counts before and after each filtering rule of one corpus, and where the corpus came from
    (``source``: file relative to the data folder, or ``hub:...``; ``sha256``: first 12 hex digits)."""

    dataset: str
    source: str
    sha256: str
    lines: int
    blank: int
    headings: int
    short: int
    kept: int
    sampled: int

    def as_dict(self) -> dict:
        """Plain dict (for tables)."""
        return asdict(self)


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
    if not isinstance(n, int) or n < 1:
        raise CompendiumError(f"n_texts (--n-texts) must be a positive integer or None, got {n!r}")
    idx = sorted(random.Random(seed).sample(range(len(texts)), n))
    return [texts[i] for i in idx]


def filter_rules(name: str, min_words: int = MIN_WORDS, seed: int = SAMPLE_SEED) -> dict:
    """The filtering and sampling rules applied to ``name`` (part of the filtered cache's key)."""
    return {
        "min_words": min_words,
        "skip_blank": True,
        "skip_headings": name == "wikitext-103",
        "n_samples": N_1BW_SAMPLES if name == "1bw" else None,
        "seed": seed,
    }


def load_filtered(
    name: str, folder: str | Path | None = None, min_words: int = MIN_WORDS, seed: int = SAMPLE_SEED
) -> tuple[list[str], FilterReport]:
    """The paper's evaluation texts: WikiText-103 test (all that pass) or 5,000 random 1BW test sentences."""
    lines, source = read_corpus(name, folder)
    kept, counts = filter_lines(name, lines, min_words)
    texts = sample_texts(kept, filter_rules(name, min_words, seed)["n_samples"], seed)
    report = FilterReport(dataset=name, source=source["file"], sha256=source["sha256"][:12],
                          sampled=len(texts), **counts)
    return texts, report


def fingerprint_texts(texts: list[str]) -> str:
    """Short sha256 of a list of texts (order matters): the data part of a cache key."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode("utf-8"))
        h.update(b"\0")
    return h.hexdigest()[:16]


def filtered_path(name: str, out_dir: str | Path = FILTERED_DIR) -> Path:
    """Where the filtered samples of ``name`` are cached (``out_dir`` relative to the repository root)."""
    return repo_path(out_dir) / f"{check_dataset(name)}.jsonl"


def filtered_key(name: str, source: dict, min_words: int = MIN_WORDS, seed: int = SAMPLE_SEED) -> dict:
    """What the filtered samples depend on: the corpus file (relative name and sha256) and the rules."""
    return {"format": 1, "dataset": name, "file": source["file"], "sha256": source["sha256"],
            "rules": filter_rules(name, min_words, seed)}


def save_filtered(name: str, texts: list[str], out_dir: str | Path = FILTERED_DIR, key: dict | None = None,
                  report: FilterReport | None = None) -> Path:
    """Write filtered texts as JSON lines after a header line holding the cache key and the filter
    report; atomically (temporary file + rename), so a killed run never leaves a partial file."""
    path = filtered_path(name, out_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"key": key, "report": report.as_dict() if report is not None else None}
    with atomic_path(path) as tmp, tmp.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps(header) + "\n")
        for i, t in enumerate(texts):
            fh.write(json.dumps({"id": i, "text": t}) + "\n")
    return path


def _read_cache(path: Path, key: dict) -> tuple[list[str], FilterReport] | None:
    """The cached texts and report if ``path`` holds samples made under ``key``, else None."""
    if not path.is_file():
        return None
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        if not rows or rows[0].get("key") != key or not isinstance(rows[0].get("report"), dict):
            return None
        return [r["text"] for r in rows[1:]], FilterReport(**rows[0]["report"])
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None  # unreadable or foreign file: recompute


def _samples(name: str, filtered_dir, folder, min_words: int, seed: int) -> tuple[list[str], FilterReport, dict, bool]:
    source = corpus_source(name, folder)
    key = filtered_key(name, source, min_words, seed)
    cached = _read_cache(filtered_path(name, filtered_dir), key)
    if cached is not None:
        return *cached, key, True
    return *load_filtered(name, folder, min_words, seed), key, False


def peek_samples(
    name: str, filtered_dir: str | Path = FILTERED_DIR, folder: str | Path | None = None,
    min_words: int = MIN_WORDS, seed: int = SAMPLE_SEED,
) -> tuple[list[str], FilterReport]:
    """What :func:`filtered_samples` returns, without writing the cache (for validation before a run)."""
    texts, report, _, _ = _samples(name, filtered_dir, folder, min_words, seed)
    return texts, report


def filtered_samples(
    name: str, filtered_dir: str | Path = FILTERED_DIR, folder: str | Path | None = None,
    min_words: int = MIN_WORDS, seed: int = SAMPLE_SEED,
) -> tuple[list[str], FilterReport]:
    """Filtered texts and report of ``name``, cached under ``filtered_dir`` keyed by the corpus file's
    relative name, its sha256 and the rules: recomputed (and rewritten) whenever the key differs."""
    texts, report, key, cached = _samples(name, filtered_dir, folder, min_words, seed)
    if not cached:
        save_filtered(name, texts, filtered_dir, key, report)
    return texts, report


def describe_empty(report: FilterReport, min_words: int = MIN_WORDS, folder: str | Path | None = None,
                   min_words_param: bool = False) -> str:
    """One line saying which file the filters emptied and by which rule, and what to do (lower ``min_words``
    where the caller has that parameter, notebook 01; else restore the file)."""
    where = report.source if report.source.startswith("hub:") else str(data_dir(folder) / report.source)
    if report.lines == 0 or report.lines == report.blank:
        return (f"no texts to analyse in {report.dataset}: {where} holds no text ({report.lines} lines, all blank): "
                f"restore the file (git checkout -- data/, see data/README.md)")
    rules = [f"{n} {what}" for n, what in ((report.blank, "blank"), (report.headings, "headings"),
                                           (report.short, f"shorter than min_words={min_words} words")) if n]
    fix = "lower min_words" if report.short and min_words_param else "restore the file (git checkout -- data/)"
    return (f"no texts to analyse in {report.dataset}: the filters removed all {report.lines} lines of {where} "
            f"({', '.join(rules)}): {fix}")


def load_samples(
    name: str, filtered_dir: str | Path = FILTERED_DIR, folder: str | Path | None = None,
    min_words: int = MIN_WORDS, seed: int = SAMPLE_SEED,
) -> list[str]:
    """The filtered texts of ``name`` (see :func:`filtered_samples`)."""
    return filtered_samples(name, filtered_dir, folder, min_words, seed)[0]
