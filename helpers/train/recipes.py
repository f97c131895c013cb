"""The two training recipes of the compendium, sized by the profiles (:mod:`helpers.config`): synthetic Markov
tasks (:mod:`helpers.corpus.synthetic`) and natural text (:mod:`helpers.corpus.natural`: GPT-2 BPE, the 1BW
training shards), each in its own run folder keyed by its configuration; the finished natural-text model is saved
with ``save_pretrained`` so every notebook can load it like any other model.
"""

from __future__ import annotations

import json
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from helpers.config import PROFILES, ModelConfig, Profile, TrainConfig
from helpers.corpus.natural import NATURAL_FILES, gpt2_bpe_tokenizer, natural_windows
from helpers.corpus.synthetic import SyntheticConfig, SyntheticData, make_dataset
from helpers.paths import CACHE_DIR, atomic_path, config_hash, repo_path
from helpers.train.checkpoints import (
    TrainRun,
    load_checkpoint,
    quiet_transformers,
)
from helpers.train.loop import build_model, evaluate_loss, lr_at, train_lm, window_loss

if TYPE_CHECKING:
    pass


__all__ = [
    "build_model",
    "lr_at",
    "window_loss",
    "evaluate_loss",
    "train_lm",
    "synthetic_setup",
    "synthetic_run_dir",
    "train_synthetic",
    "natural_setup",
    "train_natural",
    "natural_model_dir",
]


def synthetic_setup(profile: Profile = PROFILES["default"], seed: int = 0) -> tuple[SyntheticConfig, ModelConfig, TrainConfig]:
    """Data, model and training configs of a synthetic profile. ``seed`` sets the sequence sampling
    (``data_seed = seed + 1``) and the initialisation / batch order; the tasks (``task_seed``) stay."""
    p = profile.synthetic
    data_cfg = replace(p.data, data_seed=seed + 1)
    model_cfg = ModelConfig(vocab_size=data_cfg.vocab_size, n_positions=data_cfg.seq_len + 1, **asdict(p.model))
    return data_cfg, model_cfg, replace(p.train, seed=seed)


def synthetic_run_dir(cache_dir: str | Path, data_cfg: SyntheticConfig, model_cfg: ModelConfig,
                      train_cfg: TrainConfig, profile: str = "custom") -> Path:
    """``cache_dir/training/synthetic/<profile>-<config hash>``."""
    key = config_hash({"data": data_cfg.as_dict(), "model": asdict(model_cfg), "train": asdict(train_cfg)})
    return repo_path(cache_dir) / "training" / "synthetic" / f"{profile}-{key}"


def train_synthetic(
    profile: Profile = PROFILES["default"], cache_dir: str | Path = CACHE_DIR, seed: int = 0, device: str = "cpu",
    progress: bool = True,
) -> tuple[SyntheticData, TrainRun]:
    """Build the profile's synthetic data set and train (or reload) its model. Returns (data, run)."""
    data_cfg, model_cfg, train_cfg = synthetic_setup(profile, seed)
    data = make_dataset(data_cfg)
    run_dir = synthetic_run_dir(cache_dir, data_cfg, model_cfg, train_cfg, profile.name)
    run = train_lm(model_cfg, train_cfg, data.train.tokens, data.val.tokens, run_dir, device=device,
                   progress=progress, description=f"synthetic ({profile.name})")
    return data, run


def natural_setup(profile: Profile = PROFILES["default"], seed: int = 0) -> tuple[dict, ModelConfig, TrainConfig]:
    """Data settings, model and training configs of a natural-text profile."""
    p = profile.natural
    data = p.data.as_dict()
    vocab = data["vocab_size"] or 50257
    model_cfg = ModelConfig(vocab_size=vocab, n_positions=data["seq_len"] + 1, **asdict(p.model))
    return data, model_cfg, replace(p.train, seed=seed)


def natural_run_dir(cache_dir: str | Path, profile: Profile, seed: int) -> Path:
    """The training run folder (checkpoints ``epoch_NNN``, ``final``) of the natural-text model of ``profile``."""
    data, model_cfg, train_cfg = natural_setup(profile, seed)
    key = config_hash({"files": NATURAL_FILES, "data": data, "model": asdict(model_cfg), "train": asdict(train_cfg)})
    return repo_path(cache_dir) / "training" / "natural" / f"{profile.name}-{key}"


def natural_model_dir(cache_dir: str | Path = CACHE_DIR, profile: Profile = PROFILES["default"], seed: int = 0) -> Path | None:
    """Folder of the trained natural-text model of ``profile`` (model + tokenizer, loadable with
    ``helpers.lm.load.load_model``), or None when it has not been trained yet."""
    final = natural_run_dir(cache_dir, profile, seed) / "final"
    return final if (final / "config.json").is_file() else None


def train_natural(
    profile: Profile = PROFILES["default"], cache_dir: str | Path = CACHE_DIR, data_dir: str | Path | None = None,
    seed: int = 0, device: str = "cpu", progress: bool = True,
) -> tuple[TrainRun, np.ndarray]:
    """Train (or reload) the natural-text GPT-2-architecture model of ``profile``.

    Returns the run (with ``run.extra["final_dir"]``: model + tokenizer saved with ``save_pretrained``,
    the folder that :func:`natural_model_dir` returns) and the validation windows.
    """
    data, model_cfg, train_cfg = natural_setup(profile, seed)
    tokenizer = gpt2_bpe_tokenizer(data["vocab_size"])
    train, val = natural_windows(data, tokenizer, data_dir, cache_dir)
    run_dir = natural_run_dir(cache_dir, profile, seed)
    run = train_lm(model_cfg, train_cfg, train, val, run_dir, device=device, progress=progress,
                   tokenizer=tokenizer, description=f"natural text ({profile.name})")
    final = run_dir / "final"
    if not (final / "config.json").is_file() and len(run.history) == train_cfg.epochs + 1:
        lm = load_checkpoint(run.final)
        info = {"profile": profile.name, "data_files": NATURAL_FILES, "data": data, "model": asdict(model_cfg),
                "train": asdict(train_cfg), "history": run.history.to_dict("records"),
                "n_train_tokens": int(train[:, 1:].size), "n_val_tokens": int(val[:, 1:].size),
                "note": "small GPT-2-architecture model trained from scratch by helpers/train/; not GPT-2"}
        with atomic_path(final, directory=True) as tmp:
            with quiet_transformers():
                lm.model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            (tmp / "training.json").write_text(json.dumps(info, indent=1, default=str))
    run.extra["final_dir"] = final
    run.extra["n_train_tokens"] = int(train[:, 1:].size)
    run.extra["n_val_tokens"] = int(val[:, 1:].size)
    return run, val
