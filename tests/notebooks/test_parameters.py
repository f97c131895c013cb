"""Every notebook's parameters cell as papermill reads it: each name assigned in the cell is a parameter papermill
can override, and papermill warns about no line ("Unable to parse line ..." came from a comment holding '=')."""

from __future__ import annotations

import ast
import logging

import jupytext
import pytest
from conftest import REPO  # noqa: E402
from papermill.translators import PythonTranslator

SOURCES = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name[:2])
def test_every_parameter_parses_for_papermill(src, caplog):
    nb = jupytext.read(src)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{src.name}: one cell tagged 'parameters'"
    assigned = [t.id for node in ast.parse(cells[0].source).body if isinstance(node, ast.Assign)
                for t in node.targets if isinstance(t, ast.Name)]
    with caplog.at_level(logging.WARNING, logger="papermill"):
        parsed = [p.name for p in PythonTranslator.inspect(cells[0])]
    assert not [r.getMessage() for r in caplog.records], f"{src.name}: papermill could not parse every line"
    assert parsed == assigned and assigned, src.name
