"""A GGUF model's config and tokenizer, kept in the model cache after the first read, are what the file gives."""

from __future__ import annotations

from transformers import AutoConfig

from helpers.lm.load import _read_tokenizer, load_model, metadata_source, resolve_spec
from helpers.paths import MODEL_CACHE_ENV

TEXTS = ["The tokenizer works.", "  Über naïve café, 漢字 and code: def f(x): return x**2\n\tend", ""]


def test_saved_metadata_equals_the_gguf_files(tmp_path, monkeypatch):
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path))
    where, kwargs, _, _, fingerprint = resolve_spec("smollm2-135m")
    assert metadata_source(where, kwargs, fingerprint) == (where, kwargs)  # nothing kept yet: the file itself
    direct_config = AutoConfig.from_pretrained(where, **kwargs).to_dict()
    direct_tok = _read_tokenizer("smollm2-135m", where, kwargs)
    first = load_model("smollm2-135m", weights=False)  # reads the file, keeps the metadata
    kept = metadata_source(where, kwargs, fingerprint)
    assert kept[0].startswith(str(tmp_path)) and kept[1] == {}
    second = load_model("smollm2-135m", weights=False)  # reads what was kept
    config = second.model.config.to_dict()
    ignored = {"_name_or_path", "dtype"}  # where it was read from; the dtype the save records
    assert {k: v for k, v in config.items() if k not in ignored} == {
        k: v for k, v in direct_config.items() if k not in ignored}
    for text in TEXTS:
        assert second.tokenizer(text)["input_ids"] == direct_tok(text)["input_ids"]
    assert second.encode(TEXTS, 64) == first.encode(TEXTS, 64)
    assert second.fingerprint == first.fingerprint and second.describe() == first.describe()
