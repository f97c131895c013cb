"""A training run on disk: one checkpoint folder per epoch, written atomically, and reloading it.

A run folder holds ``epoch_000`` (the initialisation) .. ``epoch_NNN``; each is written into a
temporary folder and renamed, so a killed run never leaves a half-written checkpoint that looks
complete. A checkpoint is complete when it holds ``state.json`` (epoch, optimiser step, history);
only the latest keeps its optimiser state (``optimizer.pt``), which is all that resuming needs.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import torch

from helpers import CompendiumError
from helpers.lm.load import LoadedModel, wrap_model
from helpers.paths import atomic_path

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase


@dataclass
class TrainRun:
    """A finished (or stopped) training run: its folder, checkpoints in epoch order and history
    (one row per checkpoint: epoch, step, train_loss = mean batch loss of that epoch, val_loss)."""

    run_dir: Path
    checkpoints: list[Path]
    history: pd.DataFrame
    config: dict
    trained_epochs_now: int = 0
    seconds_now: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def final(self) -> Path:
        """The last checkpoint."""
        return self.checkpoints[-1]


def epoch_dir(run_dir: Path, epoch: int) -> Path:
    """The checkpoint folder of ``epoch``: ``run_dir/epoch_NNN``."""
    return run_dir / f"epoch_{epoch:03d}"


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints (folders ``epoch_XXX`` holding ``state.json``) of a run, in epoch order."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    found = [p for p in run_dir.glob("epoch_[0-9][0-9][0-9]") if (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def read_run(run_dir: Path, config: dict, trained: int = 0, seconds: float = 0.0) -> TrainRun:
    """The run in ``run_dir`` as a :class:`TrainRun` (history from its last complete checkpoint)."""
    cks = list_checkpoints(run_dir)
    if not cks:
        raise CompendiumError(f"{run_dir} holds no complete checkpoint: train the model first")
    state = json.loads((cks[-1] / "state.json").read_text())
    return TrainRun(run_dir=run_dir, checkpoints=cks, history=pd.DataFrame(state["history"]), config=config,
                    trained_epochs_now=trained, seconds_now=seconds)


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' own progress bars (saving / loading shards) inside the block."""
    from transformers.utils import logging as hf_logging

    before = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if before:
            hf_logging.enable_progress_bar()


def write_checkpoint(run_dir: Path, epoch: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                     state: dict, tokenizer: PreTrainedTokenizerBase | None = None) -> Path:
    """Save model (``save_pretrained``), tokenizer, optimiser state and ``state.json`` as the checkpoint
    of ``epoch``: into a temporary folder first, renamed into place when complete."""
    final = epoch_dir(run_dir, epoch)
    with atomic_path(final, directory=True) as tmp:
        with quiet_transformers():
            model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if optimizer is not None:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps(state, indent=1))
    return final


def prune_optimizer_states(run_dir: Path, keep: Path) -> None:
    """Optimizer states are needed only to resume from the latest checkpoint: drop the older ones."""
    for ck in list_checkpoints(run_dir):
        if ck != keep:
            (ck / "optimizer.pt").unlink(missing_ok=True)


def remove_stale(run_dir: Path) -> None:
    """Delete temporary checkpoint folders that a killed run left behind."""
    for stale in run_dir.glob(".epoch_*.tmp*"):
        shutil.rmtree(stale, ignore_errors=True)


def load_checkpoint(path: str | Path, device: str = "cpu", tokenizer: PreTrainedTokenizerBase | None = None,
                    label: str | None = None) -> LoadedModel:
    """A saved checkpoint as a :class:`helpers.lm.load.LoadedModel` (float32, eval mode, eager attention)."""
    from transformers import GPT2LMHeadModel


    path = Path(path)
    if not (path / "config.json").is_file():
        raise CompendiumError(f"{path} is not a saved checkpoint (no config.json): train the model first")
    with quiet_transformers():
        model = GPT2LMHeadModel.from_pretrained(path, attn_implementation="eager", dtype=torch.float32)
    model = model.to(device)
    return wrap_model(model, tokenizer, name=str(path), label=label or path.name)
