"""Notebooks 00-05 in the smoke profile, in order, sharing one output folder (tests/notebooks/smoke.py)."""

from __future__ import annotations

import pytest
from smoke import EXPECTED, NOTEBOOKS, run_in_smoke


@pytest.fixture(scope="module")
def outdir(tmp_path_factory):
    return tmp_path_factory.mktemp("smoke")


def test_every_notebook_has_a_check():
    assert {p.name[:2] for p in NOTEBOOKS} == set(EXPECTED)


@pytest.mark.slow
@pytest.mark.parametrize("notebook", [p for p in NOTEBOOKS if p.name[:2] < "06"], ids=lambda p: p.stem)
def test_notebook_runs_in_smoke_profile(notebook, outdir):
    run_in_smoke(notebook, outdir)
