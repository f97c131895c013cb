"""A headless run killed mid-way resumes from its last chunk and ends with the tables of an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_gpt2_dir(tmp_path_factory) -> Path:
    """A small randomly initialised GPT-2 saved with the GPT-2 BPE tokenizer, loadable by path."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from helpers.training import gpt2_bpe_tokenizer

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
            "--results-dir", str(results)]


def test_killed_run_resumes_to_identical_tables(tiny_gpt2_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    ref_res, res = tmp_path / "ref_results", tmp_path / "results"
    subprocess.run(cli(tiny_gpt2_dir, tmp_path / "ref_cache", ref_res), check=True, env=env, cwd=REPO,
                   capture_output=True)
    proc = subprocess.Popen(cli(tiny_gpt2_dir, tmp_path / "cache", res), env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list((tmp_path / "cache").rglob("chunk_00001.npz")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    chunks = list((tmp_path / "cache").rglob("chunk_*.npz"))
    assert 2 <= len(chunks) < 5, "the run should have been killed part-way (5 chunks in all)"
    assert not any(p.name.endswith(".md") for p in res.glob("*")) if res.exists() else True
    subprocess.run(cli(tiny_gpt2_dir, tmp_path / "cache", res), check=True, env=env, cwd=REPO, capture_output=True)
    for ref in sorted(ref_res.glob("*.csv")):
        assert (res / ref.name).read_text() == ref.read_text(), ref.name
    assert len(list(ref_res.glob("*.csv"))) == 2


def test_cli_bad_input_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "helpers", "analyse", "--model", "./nope", "--cache-dir", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("error: model path './nope' does not exist")
