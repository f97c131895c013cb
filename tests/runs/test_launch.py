"""torchrun over 2 processes gives byte for byte the tables, figures' data and summary of one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO  # noqa: E402
from test_resume_cli import cli, tiny_gpt2_dir  # noqa: F401  (fixture)

from helpers import CompendiumError
from helpers.runs.launch import Launch, from_env


def test_launch_from_env():
    assert from_env({}) == Launch(0, 1, 0) and not from_env({}).distributed
    launch = from_env({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert launch.distributed and launch.shard == "3/8" and launch.device("cuda") == "cuda:1"
    assert launch.device("cpu") == "cpu"
    for bad in ({"RANK": "2", "WORLD_SIZE": "2"}, {"WORLD_SIZE": "two"}):
        with pytest.raises(CompendiumError):
            from_env(bad)


def test_torchrun_two_processes_equal_one(tiny_gpt2_dir, tmp_path):  # noqa: F811
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    single = subprocess.run(cli(tiny_gpt2_dir, tmp_path / "cache1", one), env=env, cwd=REPO, capture_output=True,
                            text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    torchrun = Path(sys.executable).parent / "torchrun"
    args = [str(torchrun), "--nproc-per-node", "2", "-m", "helpers"] + cli(tiny_gpt2_dir, tmp_path / "cache2", two)[3:]
    multi = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert multi.returncode == 0, multi.stderr[-3000:]
    shards = sorted(p.parent.name for p in (tmp_path / "cache2" / "analysis").glob("*/manifest.json"))
    assert len(shards) == 2, "each rank must analyse its own shard"
    written = sorted(p.name for p in one.iterdir())
    assert written == sorted(p.name for p in two.iterdir()) and any(n.endswith(".csv") for n in written)
    for name in written:
        if name.endswith((".csv", ".md", ".json")):
            assert (two / name).read_bytes() == (one / name).read_bytes(), name
