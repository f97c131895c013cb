"""The Eq. 14 lens at the selected positions only vs the full last-block re-run, in one run on the same batches.

    python benchmarks/lens_selected.py            # SmolLM2, 24 WikiText-103 texts, paper-profile lens settings

Prints both times, their ratio and the largest difference of the inner losses (expected 0).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers.corpus.samples import load_samples  # noqa: E402
from helpers.lm.load import load_model  # noqa: E402
from helpers.residual import records  # noqa: E402


def main(n_texts: int = 24, batch_tokens: int = 4096) -> None:
    lm = load_model("smollm2-135m")
    rows = sorted((r for r in lm.encode(load_samples("wikitext-103")[:n_texts], 8192) if len(r) > 8), key=len,
                  reverse=True)
    batches, cur = [], []
    for r in rows:
        if cur and (len(cur) + 1) * len(cur[0]) > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(r)
    batches.append(cur)

    def run():
        t = time.perf_counter()
        out = [records.analyse_batch(lm, b, logit_lens=False, lens_share=0.02, keys=list(range(i * 100, i * 100 + len(b))))
               for i, b in enumerate(batches)]
        return time.perf_counter() - t, out

    fast_t, fast = run()
    selected = records.inner_losses_selected
    records.inner_losses_selected = lambda *a, **k: (_ for _ in ()).throw(NotImplementedError())
    full_t, full = run()
    records.inner_losses_selected = selected
    diff = max(float(np.nanmax(np.abs(a["inner_loss"] - b["inner_loss"]))) for a, b in zip(fast, full, strict=True))
    print(f"tokens {sum(map(len, rows))}  selected {fast_t:.1f} s  full re-run {full_t:.1f} s  max diff {diff:.2e}")
    print(f"ratio lens_full_vs_selected = {full_t / fast_t:.2f}")


if __name__ == "__main__":
    main()
