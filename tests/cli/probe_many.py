"""Run many ``python -m helpers`` command lines in one process (the bad-input probes of test_bad_input.py): one
Python start-up and one import of the package instead of one per probe, each probe's stderr and exit code as
the command line gives them.

    python tests/cli/probe_many.py PROBES.json RESULTS.json

PROBES.json: a list of ``{"argv": [...], "folder": "..."}``. When the ``load_model`` log of conftest's
``instrumented_env`` exists after a probe, it is moved into that probe's folder as ``loads.log``.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from helpers.__main__ import main  # noqa: E402


def run(argv: list[str]) -> dict:
    """Exit code and stderr of one command line, as a separate process would give them."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse's usage errors
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception:  # noqa: BLE001 -- an uncaught error is what the probe must catch: print it as Python would
            traceback.print_exc()
            code = 1
    return {"returncode": code, "stderr": err.getvalue()}


def run_all(probes: list[dict], load_log: Path | None) -> list[dict]:
    """Every probe in order; the load log, if written, moves into the probe's folder."""
    out = []
    for probe in probes:
        out.append(run(probe["argv"]))
        if load_log is not None and load_log.exists():
            load_log.replace(Path(probe["folder"]) / "loads.log")
    return out


if __name__ == "__main__":
    spec = json.loads(Path(sys.argv[1]).read_text())
    log = Path(spec["load_log"]) if spec.get("load_log") else None
    Path(sys.argv[2]).write_text(json.dumps(run_all(spec["probes"], log)))
