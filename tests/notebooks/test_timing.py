"""The wall time and peak memory that `make reproduce` writes to results/reproduce_timings.csv: the sampler sees
the memory of child processes (the notebook kernels), not only its own."""

from __future__ import annotations

import subprocess
import sys

from helpers.notebooks import PeakMemory, timed

CHILD = "import time; block = bytearray(400 * 2**20); block[::4096] = b'x' * len(block[::4096]); time.sleep(1.5)"


def test_peak_memory_includes_a_child_process():
    with PeakMemory(interval=0.1) as peak:
        subprocess.run([sys.executable, "-c", CHILD], check=True)
    alone = PeakMemory(interval=0.1)
    with alone:
        pass
    assert peak.gb >= alone.gb + 0.35  # the child's 400 MiB (0.42 GB) of touched pages


def test_timed_returns_the_result_its_time_and_memory():
    out, seconds, gb = timed(sorted, [3, 1, 2])
    assert out == [1, 2, 3] and 0 <= seconds < 60 and gb > 0
