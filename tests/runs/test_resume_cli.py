"""A headless run killed mid-way resumes from its last chunk and ends with the tables of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import (
    REPO,  # noqa: E402
    instrumented_env,
)


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    """A small randomly initialised GPT-2 saved with the GPT-2 BPE tokenizer, loadable by path."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from helpers.corpus.natural import gpt2_bpe_tokenizer

    torch.manual_seed(0)
    tok = gpt2_bpe_tokenizer(1024)
    model = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=1024))
    out = tmp_path_factory.mktemp("tiny_gpt2")
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def cli(model: Path, cache: Path, results: Path) -> list[str]:
    return [sys.executable, "-m", "helpers", "analyse", "--model", str(model), "--dataset", "1bw", "--profile", "smoke",
            "--n-texts", "160", "--max-tokens", "32", "--batch-size", "2", "--cache-dir", str(cache),
            "--results-dir", str(results), "--no-png"]


def run_cli(args: list[str], kill_after_chunk: int | None = None, site: Path | None = None) -> subprocess.CompletedProcess:
    extra = instrumented_env(site, kill_after_chunk=kill_after_chunk) if site else {"PYTHONPATH": str(REPO)}
    env = {**os.environ, **extra}
    return subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True)


def test_killed_run_resumes_to_identical_tables(tiny_gpt2_dir, tmp_path):
    """kill -9 right after chunk 1 of 5 lands (deterministic fault injection, no timing race); the rerun
    finishes the other chunks and writes tables identical to an uninterrupted run's."""
    ref_res, res = tmp_path / "ref_results", tmp_path / "results"
    assert run_cli(cli(tiny_gpt2_dir, tmp_path / "ref_cache", ref_res)).returncode == 0
    killed = run_cli(cli(tiny_gpt2_dir, tmp_path / "cache", res), kill_after_chunk=1, site=tmp_path / "site")
    assert killed.returncode == -signal.SIGKILL
    chunks = sorted(p.name for p in (tmp_path / "cache").rglob("chunk_*.npz"))
    assert chunks == ["chunk_00000.npz", "chunk_00001.npz"]
    manifest = json.loads(next((tmp_path / "cache").rglob("manifest.json")).read_text())
    assert manifest["complete"] is False and manifest["n_chunks"] == 5
    assert not res.exists() or not list(res.iterdir()), "a killed run must not leave tables"
    assert run_cli(cli(tiny_gpt2_dir, tmp_path / "cache", res)).returncode == 0
    refs = sorted([*ref_res.glob("*.csv"), *ref_res.glob("*.json")])
    assert len(refs) == 4  # Table 1, inner loss, transitions, summary.json
    for ref in refs:
        assert (res / ref.name).read_text() == ref.read_text(), ref.name


def test_merge_reads_finished_shards_only(tiny_gpt2_dir, tmp_path):
    """merge computes nothing: a missing shard is a one-line error naming it; with every shard finished the
    merged tables equal a single run's, including the text count in the caption."""
    cache, one, merged = tmp_path / "cache", tmp_path / "one", tmp_path / "merged"
    assert run_cli(cli(tiny_gpt2_dir, tmp_path / "cache1", one)).returncode == 0
    assert run_cli(cli(tiny_gpt2_dir, cache, tmp_path / "x") + ["--shard", "0/3"]).returncode == 0
    merge = cli(tiny_gpt2_dir, cache, merged)
    merge[merge.index("analyse")] = "merge"
    out = run_cli(merge + ["--shards", "3"])
    errors = [line for line in out.stderr.splitlines() if line.startswith("error:")]
    assert out.returncode == 2 and len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "shard(s) 1/3, 2/3 not finished" in errors[0]
    assert len(list((cache / "analysis").iterdir())) == 1, "merge must not start the missing shards"
    assert not merged.exists()
    for i in (1, 2):
        assert run_cli(cli(tiny_gpt2_dir, cache, tmp_path / "x") + ["--shard", f"{i}/3"]).returncode == 0
    assert run_cli(merge + ["--shards", "3"]).returncode == 0
    for ref in sorted(one.glob("cli_table1_*")):
        assert (merged / ref.name).read_text() == ref.read_text(), ref.name
    assert "160 texts" in (merged / next(one.glob("cli_table1_*.md")).name).read_text()


def test_cli_bad_input_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "helpers", "analyse", "--model", "./nope", "--cache-dir", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("error: model path './nope' does not exist")
