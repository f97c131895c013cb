"""Every numbered notebook runs end to end under papermill in the smoke profile (outputs to a temp dir)."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))


@pytest.fixture(scope="module")
def outdir(tmp_path_factory):
    return tmp_path_factory.mktemp("smoke")


def test_notebooks_exist():
    names = {p.name[:2] for p in NOTEBOOKS}
    assert {"01", "02", "03", "04"} <= names


@pytest.mark.slow
@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_profile(notebook, outdir):
    from helpers.notebooks import execute

    params = {
        "profile": "smoke",
        "figures_dir": str(outdir / "figures"),
        "results_dir": str(outdir / "results"),
        "cache_dir": str(outdir / "cache"),
        "filtered_dir": str(outdir / "filtered"),
    }
    execute(notebook, outdir / f"{notebook.stem}.ipynb", params)
    written = [*(outdir / "results").glob(f"{notebook.name[:2]}_*"), *(outdir / "figures").glob(f"{notebook.name[:2]}_*")]
    assert written, "the notebook wrote no table or figure"
