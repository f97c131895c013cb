"""Bad input never wastes a model load, never prints a traceback, never silently uses the wrong data.

A table of probes run through the command line's entry point (``python -m helpers analyse|merge``'s ``main``, all
in one child process; one of them also as its own process) and a few
through papermill on notebook 02: exit code 2 (CLI) or a PapermillExecutionError whose error is the one line
(notebook), no traceback, nothing written that looks complete, and no model loaded for the parameter errors
(conftest's ``instrumented_env``: every ``load_model`` call appends to a log file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import (
    REPO,  # noqa: E402
    instrumented_env,
)

from helpers import CompendiumError

CORPUS_1BW = "1bw/news.en.heldout-00000-of-00050"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """Tiny models (good, without tokenizer, corrupt config.json, short context), broken GGUF files, a plain
    file where folders are expected, an empty data folder and one holding a corrupt corpus file."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from helpers.corpus.natural import gpt2_bpe_tokenizer
    from helpers.lm.registry import REGISTRY

    root = tmp_path_factory.mktemp("bad_input")
    tok = gpt2_bpe_tokenizer(1024)
    out = {}
    for name, ctx, with_tok in (("tiny", 1024, True), ("short_ctx", 32, True), ("no_tokenizer", 64, False),
                                ("bad_config", 64, True)):
        torch.manual_seed(0)
        cfg = GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=ctx, vocab_size=1024, bos_token_id=1023,
                         eos_token_id=1023)
        out[name] = root / name
        GPT2LMHeadModel(cfg).save_pretrained(out[name])
        if with_tok:
            tok.save_pretrained(out[name])
    (out["bad_config"] / "config.json").write_text('{"model_type": "gpt2", "n_layer": ')
    with REGISTRY["smollm2-135m"].locate().open("rb") as fh:
        (root / "truncated.gguf").write_bytes(fh.read(8 << 20))
    out["truncated_gguf"] = root / "truncated.gguf"
    out["garbage_gguf"] = root / "garbage.gguf"
    out["garbage_gguf"].write_bytes(b"GGUF" + bytes(60))
    out["a_file"] = root / "a_file"
    out["a_file"].write_text("not a folder\n")
    out["empty_data"] = root / "empty_data"
    out["empty_data"].mkdir()
    out["bad_data"] = root / "bad_data"
    (out["bad_data"] / "1bw").mkdir(parents=True)
    (out["bad_data"] / CORPUS_1BW).write_text("garbage\n" * 100)
    return out


def analyse_argv(model: str, *extra: str, cmd: str = "analyse") -> list[str]:
    return [cmd, "--model", model, "--dataset", "1bw", "--profile", "smoke", "--n-texts", "4", "--max-tokens", "16",
            *extra]


@dataclass
class Probe:
    """One bad input: CLI arguments (``{name}`` = a path from ``files``), the expected error text, and whether
    the model may load before the error shows (only when the error needs the model: tokenizer, context)."""

    id: str
    argv: list[str]
    expect: str
    model: str = "tiny"
    cmd: str = "analyse"
    loads: bool = False
    writes_results: bool = field(default=True)


PROBES = [
    Probe("batch-size-0", ["--batch-size", "0"], "--batch-size must be an integer >= 1"),
    Probe("batch-tokens-0", ["--batch-tokens", "0"], "--batch-tokens must be an integer >= 1"),
    Probe("n-texts-0", ["--n-texts", "0"], "--n-texts must be an integer >= 1"),
    Probe("min-position-negative", ["--min-position", "-1"], "--min-position must be an integer >= 0"),
    Probe("min-position-past-max-tokens", ["--max-tokens", "8", "--min-position", "7"], "leaves no token to analyse"),
    Probe("max-tokens-1", ["--max-tokens", "1"], "--max-tokens must be an integer >= 2"),
    Probe("lens-share-2", ["--lens-share", "2"], "--lens-share must be a number in [0, 1]"),
    Probe("shard-out-of-range", ["--shard", "3/2"], "--shard 3/2 is out of range"),
    Probe("shard-malformed", ["--shard", "half"], "--shard must look like 'i/n'"),
    Probe("shard-empty", ["--n-texts", "2", "--shard", "3/4"], "--shard 3/4 of 1bw is empty: the sample has 2 texts"),
    Probe("merge-shards-0", ["--shards", "0"], "--shards must be an integer >= 1", cmd="merge"),
    Probe("merge-more-shards-than-texts", ["--n-texts", "2", "--shards", "3"], "more than the 2 texts", cmd="merge"),
    Probe("device-map-foo", ["--device-map", "foo"], "--device-map 'foo' is not a device map"),
    Probe("device-meta", ["--device", "meta"], "'meta' holds no weights"),
    Probe("results-dir-is-a-file", ["--results-dir", "{a_file}"], "is a file, not a folder", writes_results=False),
    Probe("cache-dir-is-a-file", ["--cache-dir", "{a_file}"], "is a file, not a folder"),
    Probe("cache-dir-inside-a-file", ["--cache-dir", "{a_file}/cache"], "is a file"),
    Probe("data-dir-missing", ["--data-dir", "{a_file}.nowhere"], "is not a folder"),
    Probe("data-dir-without-corpus", ["--data-dir", "{empty_data}"], f"{CORPUS_1BW} not found in"),
    Probe("data-file-corrupt", ["--data-dir", "{bad_data}"], "is not the expected"),
    Probe("model-path-missing", [], "model path './no/such/model' does not exist", model="./no/such/model"),
    Probe("gguf-truncated", [], "is truncated: its tensors need", model="truncated_gguf"),
    Probe("gguf-garbage", [], "is not a readable GGUF file", model="garbage_gguf"),
    Probe("config-json-corrupt", [], "config.json is not valid JSON", model="bad_config"),
    Probe("model-without-tokenizer", [], "has no tokenizer files", model="no_tokenizer"),
    # errors that need the model (its tokenizer or context): one line after the load, nothing written
    Probe("every-text-too-short", ["--max-tokens", "1000", "--min-position", "900"],
          "every text of 1bw is shorter than min_position + 1 = 901 tokens", loads=True),
    Probe("max-tokens-beyond-context", ["--max-tokens", "100"], "is beyond the context", model="short_ctx", loads=True),
]


def run_cli(argv: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, **instrumented_env(tmp / "site", load_log=tmp / "loads.log")}
    env.pop("METALEARN_DATA", None)
    return subprocess.run([sys.executable, "-m", "helpers", *argv], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)


def probe_argv(probe: Probe, files: dict[str, Path], tmp: Path) -> list[str]:
    model = str(files[probe.model]) if probe.model in files else probe.model
    argv = [a.format(**files) for a in analyse_argv(model, *probe.argv, cmd=probe.cmd)]
    if "--cache-dir" not in argv:
        argv += ["--cache-dir", str(tmp / "cache")]
    if "--results-dir" not in argv:
        argv += ["--results-dir", str(tmp / "results")]
    return argv


@pytest.fixture(scope="module")
def cli_results(files, tmp_path_factory) -> dict[str, tuple[subprocess.CompletedProcess, Path]]:
    """Every probe of the table through the command line's entry point, all in one child process
    (tests/cli/probe_many.py: one start-up instead of one per probe), each with its own folders."""
    root = tmp_path_factory.mktemp("probes")
    folders = {p.id: tmp_path_factory.mktemp(p.id) for p in PROBES}
    spec = {"load_log": str(root / "loads.log"),
            "probes": [{"argv": probe_argv(p, files, folders[p.id]), "folder": str(folders[p.id])} for p in PROBES]}
    (root / "probes.json").write_text(json.dumps(spec))
    env = {**os.environ, **instrumented_env(root / "site", load_log=root / "loads.log")}
    env.pop("METALEARN_DATA", None)
    done = subprocess.run([sys.executable, str(REPO / "tests" / "cli" / "probe_many.py"), str(root / "probes.json"),
                           str(root / "results.json")], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((root / "results.json").read_text())
    return {p.id: (subprocess.CompletedProcess(p.id, r["returncode"], "", r["stderr"]), folders[p.id])
            for p, r in zip(PROBES, results, strict=True)}


def test_one_probe_as_its_own_process(files, tmp_path):
    """The same probe as a separate ``python -m helpers`` process: exit code 2 and the one line (the entry point
    the in-process probes share behaves as the command line does)."""
    probe = PROBES[0]
    out = run_cli(probe_argv(probe, files, tmp_path), tmp_path)
    assert out.returncode == 2 and out.stderr.splitlines() == [f"error: {probe.expect} or None, got 0"], out.stderr


def assert_nothing_complete(tmp: Path) -> None:
    for manifest in (tmp / "cache").rglob("manifest.json"):
        assert not json.loads(manifest.read_text()).get("complete"), f"{manifest} claims a complete run"
    assert not (tmp / "results").exists() or not any((tmp / "results").iterdir()), "tables written"


@pytest.mark.parametrize("probe", PROBES, ids=lambda p: p.id)
def test_cli_probe(probe, cli_results):
    out, tmp = cli_results[probe.id]
    lines = out.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error: ")]
    assert out.returncode == 2, out.stderr[-2000:]
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    assert len(errors) == 1 and probe.expect in errors[0], out.stderr[-2000:]
    assert lines[-1] == errors[0], "the error must be the last line, on a line of its own"
    if not probe.loads:
        assert lines == errors, f"a parameter error prints exactly one line, got: {out.stderr!r}"
        assert not (tmp / "loads.log").exists(), "the model was loaded before a parameter error"
        assert not (tmp / "cache").exists(), "a parameter error must not create the cache"
    assert_nothing_complete(tmp)


def results_text(folder):
    """The tables and summary a CLI run wrote (figures aside: PNG is binary, HTML carries random ids)."""
    return {p.name: p.read_text() for p in sorted(folder.iterdir()) if p.suffix in (".csv", ".md", ".json")}


def test_zero_byte_chunk_is_recomputed_and_a_complete_run_stays_complete(files, tmp_path):
    """A 0-byte cached chunk (a full disk, a copy cut short) is recomputed: same tables, still complete."""
    argv = probe_argv(Probe("ok", [], ""), files, tmp_path)
    first = run_cli(argv, tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    tables = results_text(tmp_path / "results")
    assert tables
    chunk = next((tmp_path / "cache").rglob("chunk_00000.npz"))
    chunk.write_bytes(b"")
    again = run_cli(argv, tmp_path)
    assert again.returncode == 0 and "Traceback" not in again.stderr, again.stderr[-2000:]
    assert chunk.stat().st_size > 0
    assert results_text(tmp_path / "results") == tables
    assert json.loads((chunk.parent / "manifest.json").read_text())["complete"] is True


def test_unreadable_chunk_names_the_run_folder(tmp_path):
    """A chunk that is an archive but not a readable one: a one-line error naming the folder to delete; the
    manifest of the complete run is not downgraded; a shard with a bad chunk is 'not finished' for merge."""
    from conftest import TEXTS, tiny_with_tok

    from helpers.runs.analysis import AnalysisConfig, NotFinished, run_analysis

    lm = tiny_with_tok()
    cfg = AnalysisConfig(max_tokens=12, min_position=2, n_vectors=4, chunk_texts=3)
    _, store = run_analysis(lm, TEXTS, cfg, cache_dir=str(tmp_path), progress=False)
    with zipfile.ZipFile(store.chunk_path(1), "w") as zf:
        zf.writestr("norms.npy", b"\x93NUMPY garbage")
    with pytest.raises(CompendiumError, match="unreadable") as exc:
        run_analysis(lm, TEXTS, cfg, cache_dir=str(tmp_path), progress=False)
    assert str(store.dir) in str(exc.value) and "delete" in str(exc.value) and "\n" not in str(exc.value)
    assert store.manifest()["complete"] is True
    _, shard = run_analysis(lm, TEXTS, cfg, cache_dir=str(tmp_path), shard="1/2", progress=False)
    shard.chunk_path(0).write_bytes(b"")
    with pytest.raises(NotFinished):
        run_analysis(lm, TEXTS, cfg, cache_dir=str(tmp_path), shard="1/2", progress=False, cached_only=True)


# ------------------------------------------------------------------------------------------------
# notebooks (papermill): the validation cell shows the one line and the notebook fails


NOTEBOOK_PROBES = [
    ("n-texts-abc", {"n_texts": "abc"}, "n_texts must be an integer >= 1 or None, got 'abc'"),
    ("device-map-foo", {"device_map": "foo"}, "device_map 'foo' is not a device map"),
    ("results-dir-is-a-file", {"results_dir": "{a_file}"}, "is a file, not a folder"),
]


@pytest.mark.parametrize("name, params, expect", NOTEBOOK_PROBES, ids=[p[0] for p in NOTEBOOK_PROBES])
def test_notebook_probe(name, params, expect, files, tmp_path, monkeypatch):
    from papermill.exceptions import PapermillExecutionError

    from helpers.notebooks import execute

    for key, value in instrumented_env(tmp_path / "site", load_log=tmp_path / "loads.log").items():
        monkeypatch.setenv(key, value)  # the notebook kernel inherits it
    params = {k: v.format(**files) if isinstance(v, str) else v for k, v in params.items()}
    params = {"profile": "smoke", "model": str(files["tiny"]), "results_dir": str(tmp_path / "results"),
              "figures_dir": str(tmp_path / "figures"), "cache_dir": str(tmp_path / "cache"),
              "filtered_dir": str(tmp_path / "filtered")} | params
    with pytest.raises(PapermillExecutionError) as info:
        execute(REPO / "notebooks" / "02_inner_loss.py", tmp_path / "out.ipynb", params)
    exc = info.value
    assert exc.ename == "CompendiumError" and expect in exc.evalue and "\n" not in exc.evalue
    assert exc.traceback == [f"CompendiumError: {exc.evalue}"], exc.traceback
    assert "Traceback" not in str(exc)
    assert not (tmp_path / "loads.log").exists(), "the model was loaded before a parameter error"
    for folder in ("cache", "figures", "filtered"):
        assert not (tmp_path / folder).exists(), f"{folder} written before a parameter error"


# ------------------------------------------------------------------------------------------------
# the validation step itself (in process)


def test_validate_params_normalises_and_names_the_parameter(tmp_path):
    from helpers.validate import validate_params

    ok = validate_params({"datasets": "1bw", "n_texts": "5", "max_tokens": 16.0, "shard": (0, 2), "other": object(),
                          "lens_share": "0.5", "filtered_dir": str(tmp_path / "f")})
    assert ok == {"datasets": ["1bw"], "n_texts": 5, "max_tokens": 16, "shard": "0/2", "lens_share": 0.5,
                  "filtered_dir": str(tmp_path / "f")}
    assert not (tmp_path / "f").exists(), "validation must not write the filtered cache"
    with pytest.raises(CompendiumError, match="unknown dataset 'wikitext'"):  # never iterated by character
        validate_params({"datasets": "wikitext"})
    with pytest.raises(CompendiumError, match="^n_texts must be"):
        validate_params({"n_texts": "abc"})
    with pytest.raises(CompendiumError, match="^--n-texts must be"):
        validate_params({"n_texts": "abc"}, cli=True)
    with pytest.raises(CompendiumError, match="batch_size or batch_tokens"):
        validate_params({"batch_size": None, "batch_tokens": None})
    with pytest.raises(CompendiumError, match="names a dataset twice"):
        validate_params({"datasets": ["1bw", "1bw"]})
    with pytest.raises(CompendiumError, match="profile"):
        validate_params({"profile": "fast"})


def test_filters_that_remove_everything_name_the_file_and_the_rule(tmp_path):
    from helpers.validate import validate_params

    with pytest.raises(CompendiumError) as exc:
        validate_params({"datasets": ["1bw"], "min_words": 10**6, "filtered_dir": str(tmp_path)})
    msg = str(exc.value)
    assert CORPUS_1BW in msg and "shorter than min_words=1000000 words" in msg and "lower min_words" in msg
    assert not list(tmp_path.iterdir())


def test_notebooks_share_the_package_repo_root():
    """One repo root: the notebooks never compute their own from the working directory."""
    for nb in sorted((REPO / "notebooks").glob("0[1-4]_*.py")):
        text = nb.read_text()
        assert "Path.cwd()" not in text and "sys.path" not in text, nb.name
        assert "globals().update(validate_params(globals()))" in text, f"{nb.name} has no validation cell"


def test_notebook_mode_is_a_no_op_outside_ipython():
    from helpers.validate import notebook_mode

    assert notebook_mode() in (False, True)  # True only when pytest itself runs inside IPython


def test_cli_error_starts_on_a_fresh_line_and_os_errors_are_one_line(monkeypatch, capsys):
    """An error after a progress bar (which ends with a carriage return) gets a line of its own; an OSError
    (a full disk, a permission) is one line too, never a traceback."""
    from helpers import __main__ as cli
    from helpers import commands

    def bar_then_error(args):
        sys.stderr.write("\rchunks:  50%|#####     | 1/2")
        raise CompendiumError("cached chunk chunk_00001.npz is unreadable")

    monkeypatch.setattr(commands, "cmd_readme", bar_then_error)
    assert cli.main(["readme"]) == 2
    assert capsys.readouterr().err.endswith("1/2\nerror: cached chunk chunk_00001.npz is unreadable\n")

    def disk_full(args):
        raise OSError(28, "No space left on device", "/results/x.csv")

    monkeypatch.setattr(commands, "cmd_readme", disk_full)
    assert cli.main(["readme"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: No space left on device (/results/x.csv)")


HEAVY = ("torch", "transformers", "pandas", "plotly", "papermill")


@pytest.mark.parametrize("argv, flag", [
    (["analyse", "--batch-size", "0", "--profile", "smoke"], "--batch-size"),
    (["analyse", "--lens-share", "2", "--profile", "smoke"], "--lens-share"),
    (["merge", "--shards", "0"], "--shards"),
    (["notebook", "99"], "no notebook source matches"),
    (["notebook", "02", "--model", "gpt2"], "is not a model of profile"),
])
def test_bad_arguments_are_answered_before_any_heavy_import(argv, flag):
    """A typo is answered from the torch-free checks: the entry point imports the command's modules (torch,
    transformers, pandas, plotly, papermill) only after its arguments pass, which is what keeps the answer
    well under a second (it took 8-10 s when the entry point imported the whole package first)."""
    code = ("import sys; from helpers.__main__ import main; rc = main(sys.argv[1:]); "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules)); sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: ") and flag in proc.stderr, proc.stderr
    assert proc.stdout.strip() == "[]", f"heavy modules imported before the error: {proc.stdout}"


def test_valid_arguments_reach_the_command_module(monkeypatch):
    """The other side: arguments that pass reach the heavy command (here ``notebook 02``, stubbed), with the
    values the checks normalised."""
    from helpers import __main__ as cli
    from helpers import commands

    seen = []
    monkeypatch.setattr(commands, "cmd_notebook", lambda args: seen.append((args.only, args.profile)))
    assert cli.main(["notebook", "02", "--profile", "smoke"]) == 0
    assert seen == [(["02"], "smoke")]


def test_validation_checks_the_sample_the_run_filters(monkeypatch):
    """A notebook's ``seed`` draws its texts from the filtered corpus; the filter itself (the 1BW draw of 5,000
    sentences) uses SAMPLE_SEED in every run. Validation checked the filter drawn with the notebook's ``seed``, a
    different sample from the one analysed; only notebook 01's ``filter_seed`` changes the filter's draw."""
    from helpers import validate
    from helpers.corpus.samples import SAMPLE_SEED

    seen = []

    def peek(name, filtered_dir, data_dir, min_words, seed):
        seen.append(seed)
        return ["a text of enough words"] * 10, None

    monkeypatch.setattr(validate, "peek_samples", peek)
    validate.validate_params({"datasets": ["1bw"], "seed": 7})
    validate.validate_params({"datasets": ["1bw"], "filter_seed": 7})
    assert seen == [SAMPLE_SEED, 7]
