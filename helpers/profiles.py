"""Run sizes for notebooks 02-04 and the headless CLI.

- ``smoke``: what ``make test`` runs (seconds per notebook).
- ``default``: what ``make reproduce`` runs on a 2-core CPU with the default model (about 30 minutes
  for every notebook together).
- ``paper``: the paper's full protocol: every qualifying WikiText-103 test text, 5,000 1BW samples,
  no truncation below the model's context; for GPU machines or a patient CPU.
"""

from __future__ import annotations

from helpers import CompendiumError

PROFILES: dict[str, dict] = {
    "smoke": {
        "n_texts": {"wikitext-103": 6, "1bw": 8},
        "max_tokens": 24,
        "n_vectors": 6,
        "pca_samples": 6,
        "n_boot": 50,
    },
    "default": {
        "n_texts": {"wikitext-103": 120, "1bw": 240},
        "max_tokens": 64,
        "n_vectors": 150,
        "pca_samples": 50,
        "n_boot": 1000,
    },
    "paper": {
        "n_texts": {"wikitext-103": None, "1bw": None},
        "max_tokens": None,
        "n_vectors": 150,
        "pca_samples": 150,
        "n_boot": 1000,
    },
}


def get_profile(name: str) -> dict:
    """The settings of profile ``name`` (a copy)."""
    if name not in PROFILES:
        raise CompendiumError(f"unknown profile '{name}': choose one of {', '.join(PROFILES)}")
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in PROFILES[name].items()}
