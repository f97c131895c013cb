"""The one data-folder resolver, checksums, the filtered-sample cache and provenance without machine paths."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pandas as pd
import pytest

from helpers import CompendiumError
from helpers.corpus import samples as data
from helpers.corpus import sources
from helpers.corpus.natural import NATURAL_FILES, natural_files
from helpers.corpus.samples import filtered_path, filtered_samples, load_filtered, load_samples, save_filtered
from helpers.corpus.sources import CHECKSUMS, LOCAL_FILES, corpus_file, corpus_source, resolve_data_dir
from helpers.paths import file_sha256, repo_root

REPO_DATA = repo_root() / "data"
WIKI = LOCAL_FILES["wikitext-103"]
BW = LOCAL_FILES["1bw"]


def _copy(rel: str, folder: Path) -> Path:
    dest = folder / rel
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(REPO_DATA / rel, dest)
    return folder


def _fake_1bw(folder: Path, word: str, monkeypatch, n: int = 30) -> Path:
    """A fake 1BW test shard of ``n`` 12-word sentences made of ``word``, registered in the checksum table."""
    path = folder / BW
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(" ".join(f"{word}{i}" for _ in range(12)) + "\n" for i in range(n)))
    monkeypatch.setitem(CHECKSUMS, BW, file_sha256(path))
    return folder


# ---------------------------------------------------------------- the shipped files


def test_repo_data_matches_readme_checksums():
    readme = (REPO_DATA / "README.md").read_text()
    listed = dict(re.findall(r"^\| `([\w./-]+)` \|.*`([0-9a-f]{64})` \|$", readme, flags=re.M))
    assert listed == CHECKSUMS  # the table in the code and data/README.md say the same
    assert set(NATURAL_FILES) | set(LOCAL_FILES.values()) == set(CHECKSUMS)
    for rel, digest in listed.items():
        assert file_sha256(REPO_DATA / rel) == digest, rel


def test_shipped_files_are_tracked_and_the_cache_is_ignored():
    import subprocess

    def ignored(rel: str) -> bool:
        return subprocess.run(["git", "check-ignore", "-q", rel], cwd=repo_root()).returncode == 0

    assert not any(ignored(f"data/{rel}") for rel in CHECKSUMS)
    assert ignored("data/filtered/wikitext-103.jsonl")


# ---------------------------------------------------------------- the resolver


def test_resolver_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("METALEARN_DATA", raising=False)
    assert resolve_data_dir() == (REPO_DATA, "repository data/")
    env = _copy(WIKI, tmp_path / "env")
    monkeypatch.setenv("METALEARN_DATA", str(env))
    assert resolve_data_dir()[0] == env and corpus_file(WIKI) == env / WIKI
    explicit = _copy(WIKI, tmp_path / "explicit")
    assert resolve_data_dir(explicit) == (explicit, "argument") and corpus_file(WIKI, explicit) == explicit / WIKI
    monkeypatch.setenv("METALEARN_DATA", "")  # empty = unset
    assert corpus_file(WIKI) == REPO_DATA / WIKI
    assert resolve_data_dir("data")[0] == REPO_DATA  # relative paths start at the repository root


def test_explicit_folder_never_falls_back(tmp_path, monkeypatch):
    monkeypatch.delenv("METALEARN_DATA", raising=False)
    with pytest.raises(CompendiumError, match="not found") as exc:
        corpus_file(BW, tmp_path)
    assert "\n" not in str(exc.value)
    monkeypatch.setenv("METALEARN_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(CompendiumError, match="METALEARN_DATA"):
        load_filtered("1bw")
    with pytest.raises(CompendiumError, match="nowhere"):
        natural_files()


def test_missing_repo_file_without_hub_copy_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv("METALEARN_DATA", raising=False)
    monkeypatch.setattr(sources, "DATA_DIR", str(tmp_path / "empty"))
    with pytest.raises(CompendiumError, match="no loadable hub copy") as exc:
        load_filtered("1bw")
    assert "\n" not in str(exc.value) and "git checkout -- data/" in str(exc.value)


def test_checksum_mismatch_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.delenv("METALEARN_DATA", raising=False)
    folder = _copy(BW, tmp_path)
    with (folder / BW).open("a") as fh:
        fh.write("an extra line that the verified shard does not hold\n")
    with pytest.raises(CompendiumError, match=re.escape(BW)) as exc:
        load_filtered("1bw", folder)
    msg = str(exc.value)
    assert "\n" not in msg and "sha256" in msg and "git checkout" in msg
    with pytest.raises(CompendiumError, match="sha256"):
        load_samples("1bw", tmp_path / "filtered", folder)


# ---------------------------------------------------------------- the filtered cache


def test_filtered_cache_follows_the_corpus(tmp_path, monkeypatch):
    """A filtered file written from corpus A must not be served when corpus B is asked for."""
    cache = tmp_path / "filtered"
    a = _fake_1bw(tmp_path / "a", "alpha", monkeypatch)
    texts_a = load_samples("1bw", cache, a)
    assert texts_a and all(t.startswith("alpha") for t in texts_a)
    assert filtered_path("1bw", cache).is_file()
    b = _fake_1bw(tmp_path / "b", "beta", monkeypatch)
    texts_b = load_samples("1bw", cache, b)
    assert texts_b and all(t.startswith("beta") for t in texts_b)
    assert load_samples("1bw", cache, b) == texts_b  # and the cache now holds B


def test_filtered_cache_ignores_an_old_unkeyed_file(tmp_path, monkeypatch):
    cache = tmp_path / "filtered"
    save_filtered("1bw", ["stale text from an old run"], cache)  # no key: an old-style file
    b = _fake_1bw(tmp_path / "b", "beta", monkeypatch)
    assert all(t.startswith("beta") for t in load_samples("1bw", cache, b))
    filtered_path("1bw", cache).write_text("garbage\n")
    assert all(t.startswith("beta") for t in load_samples("1bw", cache, b))


def test_filtered_cache_hit_and_rules_in_key(tmp_path, monkeypatch):
    cache = tmp_path / "filtered"
    a = _fake_1bw(tmp_path / "a", "alpha", monkeypatch)
    texts, rep = filtered_samples("1bw", cache, a)
    calls = []
    real = data.load_filtered
    monkeypatch.setattr(data, "load_filtered", lambda *a, **k: calls.append(1) or real(*a, **k))
    again, rep2 = filtered_samples("1bw", cache, a)
    assert again == texts and rep2 == rep and calls == []  # same key: read from the cache
    filtered_samples("1bw", cache, a, min_words=13)
    assert calls == [1]  # another rule: recomputed
    assert not list(cache.glob("*.tmp*"))  # written through a temporary file


def test_filtered_dir_is_relative_to_the_repo_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert filtered_path("1bw", "data/filtered") == repo_root() / "data" / "filtered" / "1bw.jsonl"


# ---------------------------------------------------------------- provenance


def test_filter_counts_name_relative_files_and_checksums(tmp_path, monkeypatch):
    from helpers.report.output import save_table

    monkeypatch.delenv("METALEARN_DATA", raising=False)
    folder = _copy(WIKI, _copy(BW, tmp_path / "data"))
    rows = [filtered_samples(ds, tmp_path / "filtered", folder)[1].as_dict() for ds in ("wikitext-103", "1bw")]
    counts = pd.DataFrame(rows)
    assert list(counts["source"]) == [WIKI, BW]
    assert list(counts["sha256"]) == [CHECKSUMS[WIKI][:12], CHECKSUMS[BW][:12]]
    csv, md = save_table(counts, "01_filter_counts", tmp_path / "results", caption="counts")
    for text in (csv.read_text(), md.read_text()):
        assert str(tmp_path) not in text and "/work" not in text and not re.search(r"(^|[\s|,])/\w", text)
    assert corpus_source("1bw", folder) == {"file": BW, "sha256": CHECKSUMS[BW]}


def test_real_corpora_load_from_repo_data(tmp_path, monkeypatch):
    monkeypatch.delenv("METALEARN_DATA", raising=False)
    for ds, n_sampled in (("wikitext-103", 1938), ("1bw", 5000)):
        texts, rep = filtered_samples(ds, tmp_path / "filtered")
        assert len(texts) == rep.sampled == n_sampled and rep.source == LOCAL_FILES[ds]
