"""Notebook sources are jupytext percent files (``notebooks/NN_name.py``): the one source people edit.

``execute`` builds the .ipynb from a source in memory and runs it with papermill; ``make reproduce``
(``python -m helpers notebook``) and the tests both go through it, so there is one way to run a notebook.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from helpers.paths import repo_root

PER_MODEL = ("02", "03", "04")  # notebooks that ``make reproduce`` also runs on the profile's further models
# the kernel's own log at ERROR: its start-up notice ("Kernel is running over TCP without encryption", about a
# local kernel talking to its own client) would otherwise print once per notebook, between the lines that matter
KERNEL_ARGS = ["--IPKernelApp.log_level=ERROR"]


def sources() -> list[Path]:
    """The numbered notebook sources, in the order ``make reproduce`` runs them (06 trains the model 05 checks)."""
    found = sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.py"))
    order = ["00", "01", "02", "03", "04", "06", "05"]
    rank = {p: order.index(p.name[:2]) if p.name[:2] in order else len(order) + i for i, p in enumerate(found)}
    return sorted(found, key=rank.__getitem__)


LINK = re.compile(r"\]\((?!https?:|#|mailto:)([^)\s]+)\)")  # a Markdown link to a relative path


def relink(text: str, src_dir: Path, out_dir: Path) -> str:
    """Markdown ``text`` written in ``src_dir`` with every relative link rewritten to work from ``out_dir`` (the
    executed copies live one folder below their sources), anchors kept."""
    def fix(m: re.Match) -> str:
        target, hash_, anchor = m.group(1).partition("#")
        new = Path(os.path.relpath((src_dir / target).resolve(), out_dir.resolve())).as_posix()
        return f"]({new}{hash_}{anchor})"

    return LINK.sub(fix, text)


def execute(source: str | Path, output: str | Path, parameters: dict | None = None, log_output: bool = False,
            progress_bar: bool = False) -> Path:
    """Build ``source`` into a notebook, execute it with papermill (cwd = the notebooks folder) and write
    the executed copy to ``output``; papermill's ``log_output`` streams cell output to the terminal."""
    import jupytext
    import papermill as pm

    src = Path(source)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    nb = jupytext.read(src)
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = relink(cell.source, src.parent, out.parent)
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    pm.execute_notebook(nb, str(out), parameters=parameters or {}, cwd=str(repo_root() / "notebooks"),
                        kernel_name="python3", log_output=log_output, progress_bar=progress_bar,
                        extra_arguments=KERNEL_ARGS)
    return out


@dataclass
class PeakMemory:
    """Peak resident memory of this process and all its children (the notebook kernels) while the block runs,
    sampled every ``interval`` seconds in a background thread: ``with PeakMemory() as peak: ...; peak.gb``."""

    interval: float = 0.5
    peak_bytes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)

    def _sample(self) -> None:
        me = psutil.Process(os.getpid())
        while True:
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:  # a process that ended between the listing and the reading
                    pass
            self.peak_bytes = max(self.peak_bytes, total)
            if self._stop.wait(self.interval):
                return

    def __enter__(self) -> PeakMemory:
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def gb(self) -> float:
        """The peak in GB (10^9 bytes)."""
        return self.peak_bytes / 1e9


def stale_pngs(figures_dir: Path, since: float) -> list[str]:
    """Figures whose HTML was written at or after ``since`` but whose PNG is missing or older than the HTML:
    the static copies a run could not refresh (no browser), by name."""
    out = []
    for html in sorted(figures_dir.glob("*.html")):
        if html.stat().st_mtime < since:
            continue
        png = html.with_suffix(".png")
        if not png.is_file() or png.stat().st_mtime < html.stat().st_mtime - 1:
            out.append(html.stem)
    return out


def timed(fn, *args, **kwargs) -> tuple[object, float, float]:
    """``fn(*args, **kwargs)``'s result, its wall time in seconds and the peak resident memory in GB of this
    process and its children meanwhile."""
    start = time.time()
    with PeakMemory() as peak:
        out = fn(*args, **kwargs)
    return out, time.time() - start, peak.gb
