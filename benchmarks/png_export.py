"""Static PNG export: one browser per figure (plotly's default) against helpers.report.output's kept-open browser,
in one run on the same figure. Prints seconds per export and ``ratio png_fresh_vs_kept = X``.

    python benchmarks/png_export.py [--n 4]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import plotly.graph_objects as go

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from helpers.report.output import save_figure  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=4)
    n = ap.parse_args().n
    fig = go.Figure(go.Scatter(x=list(range(100)), y=list(range(100))))
    with tempfile.TemporaryDirectory() as tmp:
        fresh = []
        for i in range(n):
            t = time.perf_counter()
            fig.write_image(Path(tmp) / f"fresh{i}.png", width=1000, height=600)
            fresh.append(time.perf_counter() - t)
        kept = []
        for i in range(n):
            t = time.perf_counter()
            save_figure(fig, f"kept{i}", tmp, caption="benchmark")
            kept.append(time.perf_counter() - t)
    print("fresh browser per PNG, s:", " ".join(f"{x:.2f}" for x in fresh))
    print("kept-open browser (first starts it), s:", " ".join(f"{x:.2f}" for x in kept))
    print(f"ratio png_fresh_vs_kept = {sum(fresh) / len(fresh) / (sum(kept[1:]) / max(1, len(kept) - 1)):.1f}")


if __name__ == "__main__":
    main()
