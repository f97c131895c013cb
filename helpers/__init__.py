"""Helpers for the meta-learning-perspective compendium (Wu & Varshney).

The notebooks under ``notebooks/`` stay thin and call into this package; ARCHITECTURE.md gives the data
flow and one line per module (models -> data -> capture -> lens/analysis -> pipeline/store -> reports/plots,
plus surrogates/ for Table 2 and synthetic/training/measures for the v2 training dynamics).
"""

__version__ = "0.1.0"


class CompendiumError(Exception):
    """An error caused by the user's input, reported as one line saying what to do."""


def param_flag(key: str, cli: bool) -> str:
    """How the caller names a parameter in an error: ``--n-texts`` on the command line, ``n_texts`` in a notebook."""
    return "--" + key.replace("_", "-") if cli else key
