"""What the model session saves: a GGUF model's load (dequantisation) against a reread of the session's float copy.

    python benchmarks/model_session.py [MODEL ...]   # default: the four registry models

For each model, in one process: a load outside a session, a load inside a fresh session (dequantises and keeps the
float copy), a reread of that copy; their seconds, the ratio load / reread, the copy's size on disk, and whether
the reread model equals the dequantised one bit for bit (every tensor, and the logits of one sentence). The
session folder is a temporary one, removed at the end.
"""

from __future__ import annotations

import sys
import tempfile
import time

import torch

from helpers.lm.load import free_memory, load_model
from helpers.lm.registry import REGISTRY
from helpers.lm.session import weights_session


def _timed_load(spec: str):
    start = time.time()
    lm = load_model(spec)
    return lm, time.time() - start


def main() -> None:
    """Print one line per model."""
    specs = sys.argv[1:] or list(REGISTRY)
    print("model | load s (no session) | first load in session s (load + keep) | reread s | load/reread | "
          "copy GB | bitwise equal")
    for spec in specs:
        plain, t_plain = _timed_load(spec)
        del plain
        free_memory()
        with tempfile.TemporaryDirectory(prefix="session_") as tmp, weights_session(tmp, keep=True) as folder:
            first, t_first = _timed_load(spec)
            second, t_reread = _timed_load(spec)
            size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e9
            a, b = first.model.state_dict(), second.model.state_dict()
            same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
            ids = torch.tensor([first.encode(["The session keeps the weights of the model."], 16)[0]])
            with torch.inference_mode():
                same = same and torch.equal(first.model(ids).logits, second.model(ids).logits)
            del first, second, a, b
            free_memory()
        print(f"{spec} | {t_plain:.1f} | {t_first:.1f} | {t_reread:.1f} | {t_plain / t_reread:.1f} | {size:.2f} | "
              f"{same}", flush=True)


if __name__ == "__main__":
    main()
