"""`make lab`: JupyterLab serves the notebook sources, and jupytext opens each as a notebook."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from conftest import REPO  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def test_lab_serves_the_notebook_sources_as_notebooks():
    port, token = free_port(), "compendium-test"
    args = ["make", "-s", "lab", f"BIN={Path(sys.executable).parent}",
            f"LAB_ARGS=--no-browser --port {port} --IdentityProvider.token={token}"]
    proc = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}/api/contents"
    try:
        listing = None
        deadline = time.time() + 90
        while time.time() < deadline and listing is None:
            try:
                listing = get(f"{base}/notebooks?token={token}")
            except OSError:
                time.sleep(0.5)
        assert listing is not None, "JupyterLab did not answer within 90 s"
        names = {c["name"] for c in listing["content"]}
        sources = {p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.py")}
        assert sources and sources <= names
        nb = get(f"{base}/notebooks/02_inner_loss.py?token={token}&type=notebook")
        assert nb["type"] == "notebook"
        tags = [c.get("metadata", {}).get("tags", []) for c in nb["content"]["cells"]]
        assert ["parameters"] in tags
        # the server's root is the repository, so the notebooks' links to ../docs/ and ../results/ open too
        assert get(f"{base}/docs/findings.md?token={token}&type=file")["type"] == "file"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
