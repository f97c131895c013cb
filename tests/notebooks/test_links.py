"""Every relative link in the notebooks' Markdown resolves, anchor included, from the sources (notebooks/, and
JupyterLab, whose root is the repository) and from the executed copies (notebooks/executed/, rewritten)."""

from __future__ import annotations

import re
from pathlib import Path

import jupytext
import pytest
from conftest import REPO  # noqa: E402

from helpers.notebooks import LINK, relink

SOURCES = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.py"))


def markdown(src: Path) -> str:
    return "\n".join(c.source for c in jupytext.read(src).cells if c.cell_type == "markdown")


def broken_links(text: str, base: Path) -> list[str]:
    """Relative links of ``text`` (read from folder ``base``) whose file is missing or whose anchor the target
    does not hold (an ``id="..."`` or a heading that GitHub would turn into that anchor)."""
    bad = []
    for m in LINK.finditer(text):
        target, _, anchor = m.group(1).partition("#")
        path = (base / target).resolve()
        if not path.exists():
            bad.append(m.group(1))
        elif anchor and path.is_file():
            body = path.read_text()
            headings = {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                        for h in re.findall(r"^#+ (.+)$", body, flags=re.M)}
            if f'id="{anchor}"' not in body and anchor not in headings:
                bad.append(m.group(1))
    return bad


@pytest.mark.parametrize("src", SOURCES, ids=lambda p: p.name[:2])
def test_links_resolve_from_the_source_and_the_executed_copy(src):
    text = markdown(src)
    assert LINK.search(text), f"{src.name} links to nothing (its opening says where the result is read)"
    assert not broken_links(text, src.parent), src.name
    executed = src.parent / "executed"
    moved = relink(text, src.parent, executed)
    assert moved != text and "](../../" in moved
    assert not broken_links(moved, executed), src.name


def test_every_opening_says_what_the_notebook_shows():
    for src in SOURCES:
        opening = markdown(src).split("\n\n")[:3]
        assert any(p.startswith("**What it shows.**") for p in opening), src.name
        assert any("*Where its result is read:*" in p for p in opening), src.name


def test_broken_links_are_caught(tmp_path):
    (tmp_path / "a.md").write_text('<a id="here"></a>\n# A heading\n')
    text = "[ok](a.md#here) [ok](a.md#a-heading) [gone](b.md) [no anchor](a.md#nowhere) [web](https://x.org/y)"
    assert broken_links(text, tmp_path) == ["b.md", "a.md#nowhere"]
