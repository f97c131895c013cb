"""Notebook sources are jupytext percent files (``notebooks/NN_name.py``): the one source people edit.

``execute`` builds the .ipynb from a source in memory and runs it with papermill; ``make reproduce``
(``python -m helpers notebook``) and the tests both go through it, so there is one way to run a notebook.
"""

from __future__ import annotations

from pathlib import Path

from helpers.paths import repo_root

PER_MODEL = ("02", "03", "04")  # notebooks that ``make reproduce`` also runs on the profile's further models


def sources() -> list[Path]:
    """The numbered notebook sources, in the order ``make reproduce`` runs them (06 trains the model 05 checks)."""
    found = sorted((repo_root() / "notebooks").glob("[0-9][0-9]_*.py"))
    order = ["00", "01", "02", "03", "04", "06", "05"]
    rank = {p: order.index(p.name[:2]) if p.name[:2] in order else len(order) + i for i, p in enumerate(found)}
    return sorted(found, key=rank.__getitem__)


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
    nb.metadata.setdefault("kernelspec", {"name": "python3", "display_name": "Python 3", "language": "python"})
    pm.execute_notebook(nb, str(out), parameters=parameters or {}, cwd=str(repo_root() / "notebooks"),
                        kernel_name="python3", log_output=log_output, progress_bar=progress_bar)
    return out
