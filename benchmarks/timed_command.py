"""Wall time and peak resident memory of any command and all its children (make, pytest workers, notebook kernels),
sampled every 0.5 s with the sampler `make reproduce` uses for its timings table.

    python benchmarks/timed_command.py make test

Prints the command's exit code, its wall time and the peak RSS in GB last; exits with the command's exit code.
"""

from __future__ import annotations

import subprocess
import sys

from helpers.notebooks import timed


def main() -> int:
    """Run the command given on the command line, measure it, print one line."""
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    proc, seconds, gb = timed(subprocess.run, sys.argv[1:])
    print(f"{' '.join(sys.argv[1:])}: rc {proc.returncode}, {seconds:.0f} s, peak RSS (with children) {gb:.1f} GB")
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main())
