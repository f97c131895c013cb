"""The layer map of ARCHITECTURE.md holds in the source: every import between subpackages is one the document's
'Who imports whom' sentence allows (it is parsed here, so the document and the code cannot drift apart)."""

from __future__ import annotations

import ast
import re

from conftest import REPO  # noqa: E402

LAYER0 = {"__init__", "paths", "checks", "config"}
BELOW = {  # "everything below" for the two top modules that say so
    "experiments": {"lm", "corpus", "stats", "residual", "runs", "surrogates", "train", "report"},
    "commands": {"lm", "corpus", "stats", "residual", "runs", "surrogates", "train", "report", "experiments",
                 "notebooks", "validate"},
}


def allowed_edges() -> dict[str, set[str]]:
    """``{"runs": {"lm", "corpus", "residual"}, ...}`` from ARCHITECTURE.md's sentence."""
    text = (REPO / "ARCHITECTURE.md").read_text()
    sentence = text[text.index("Who imports whom"):].split("\n\n")[0]
    out = {}
    for src, targets in re.findall(r"`([\w_]+) -> ([^`]+)`", sentence):
        out[src] = BELOW[src] if targets.strip() == "everything below" else {t.strip() for t in targets.split(",")}
    return out


def actual_edges(package=REPO / "helpers") -> dict[str, set[str]]:
    """Every import from one subpackage or top-level module of ``package`` to another, read from the source."""
    out: dict[str, set[str]] = {}
    for path in package.rglob("*.py"):
        rel = path.relative_to(package)
        src = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] if node.module != "helpers" else [f"helpers.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                if parts[0] == "helpers" and len(parts) > 1:
                    target = parts[1] if (package / parts[1]).exists() or \
                        (package / f"{parts[1]}.py").exists() else "__init__"
                    if target != src:
                        out.setdefault(src, set()).add(target)
    return out


def disallowed(edges: dict[str, set[str]], allowed: dict[str, set[str]]) -> dict[str, list[str]]:
    wrong = {}
    for src, targets in edges.items():
        upper = targets - LAYER0
        if src in LAYER0:
            bad = upper  # layer 0 imports only layer 0
        else:
            bad = upper - allowed.get(src, set())
        if bad:
            wrong[src] = sorted(bad)
    return wrong


def test_every_import_between_subpackages_is_one_the_document_allows():
    allowed = allowed_edges()
    assert {"residual", "runs", "experiments", "validate", "commands", "__main__"} <= set(allowed)
    wrong = disallowed(actual_edges(), allowed)
    assert not wrong, f"imports the layer map of ARCHITECTURE.md does not allow: {wrong}"


def test_the_check_catches_an_upward_import(tmp_path):
    """The other side: in a package where report imports lm and paths imports runs (an upward import into layer
    0), both are reported; its import of stats is allowed."""
    pkg = tmp_path / "helpers"
    for name in ("report", "lm", "stats", "runs"):
        (pkg / name).mkdir(parents=True)
    (pkg / "report" / "fig.py").write_text("from helpers.lm.load import x\nfrom helpers.stats import y\n")
    (pkg / "paths.py").write_text("import helpers.runs.store\n")
    assert disallowed(actual_edges(pkg), allowed_edges()) == {"report": ["lm"], "paths": ["runs"]}


ENTRY = {"config.py", "validate.py", "commands.py", "__main__.py"}  # where a profile name is resolved


def test_the_profile_is_resolved_once_at_the_entry_points():
    """Below the entry points (the CLI, validation, the notebooks' setup cell) no module looks a profile up by
    name: every function that needs its settings takes the typed :class:`helpers.config.Profile`, so two places
    cannot decide the same setting differently."""
    offenders = []
    for path in (REPO / "helpers").rglob("*.py"):
        if path.name in ENTRY and path.parent.name == "helpers":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "get_profile":
                offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == [], offenders
