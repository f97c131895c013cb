"""Every numbered notebook runs end to end under papermill in the smoke profile (outputs to a temp dir): the
expected table of each and the run itself, shared by the two test files (notebooks 00-05, and 06-09, which use
the model notebook 06 trains), so that pytest-xdist can run the two chains on two workers."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from conftest import REPO

from helpers.notebooks import execute

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))


def _between(lo: float, hi: float):
    return lambda values: bool(((values >= lo) & (values <= hi)).all())


# For every notebook: a table it must write, a column, and the range every value of that column must lie in
# (smoke profile). A notebook that silently writes nothing, or nonsense, fails here.
EXPECTED = {
    "00": ("00_eq1_identity.csv", "relative error", lambda v: bool((v.iloc[:2] <= 1e-5).all())),  # row 3: momentum
    "01": ("01_filter_counts.csv", "kept", _between(1, 10**6)),
    "02": ("02_inner_loss_summary_smollm2-135m_smoke.csv", "last layer", _between(0.0, 1.0)),
    "03": ("03_table1_smollm2-135m_smoke.csv", "pair_pct", _between(50.0, 100.0)),
    "04": ("04_pca_smollm2-135m_smoke_1bw.html", None, None),
    "05": ("05_table2_overall.csv", "overall", _between(0.0, 100.0)),
    "06": ("06_norms_natural_smoke.csv", "sequence_pct", _between(0.0, 100.0)),
    "07": ("07_powered_thirds_smoke.csv", "descent_pct", _between(0.0, 100.0)),
    "08": ("08_cross_model_smoke.csv", "pair_pct", _between(0.0, 100.0)),
    "09": ("09_geometry_rates_smoke.csv", "null_pair_pct", _between(0.0, 100.0)),
}


def run_in_smoke(notebook: Path, outdir: Path) -> None:
    """Execute ``notebook`` in the smoke profile into ``outdir`` and check the table it must write."""
    params = {
        "profile": "smoke",
        "figures_dir": str(outdir / "figures"),
        "results_dir": str(outdir / "results"),
        "cache_dir": str(outdir / "cache"),
        "filtered_dir": str(outdir / "filtered"),
    }
    execute(notebook, outdir / f"{notebook.stem}.ipynb", params)
    name, column, check = EXPECTED[notebook.name[:2]]
    if column is None:
        assert (outdir / "figures" / name).stat().st_size > 10_000, f"{name} missing or empty"
        return
    table = pd.read_csv(outdir / "results" / name)
    assert len(table) and column in table, f"{name} has no rows or no column {column!r}"
    values = pd.to_numeric(table[column], errors="coerce").dropna()
    assert len(values) and check(values), f"{name}[{column!r}] out of range: {values.tolist()}"
