"""Notebooks 06-09 in the smoke profile, in order, sharing one output folder: 06 trains the small natural-text
model that 07-09 analyse (tests/notebooks/smoke.py)."""

from __future__ import annotations

import pytest
from smoke import NOTEBOOKS, run_in_smoke


@pytest.fixture(scope="module")
def outdir(tmp_path_factory):
    return tmp_path_factory.mktemp("smoke_trained")


@pytest.mark.slow
@pytest.mark.parametrize("notebook", [p for p in NOTEBOOKS if p.name[:2] >= "06"], ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_profile(notebook, outdir):
    run_in_smoke(notebook, outdir)
