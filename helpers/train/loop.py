"""Train GPT-2-architecture causal LMs from scratch: the model, the learning-rate schedule and the resumable,
seeded, deterministic-on-CPU training loop (checkpoints through :mod:`helpers.train.checkpoints`).
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm  # text bars: they stream through papermill and need no ipywidgets

from helpers import CompendiumError
from helpers.config import ModelConfig, TrainConfig
from helpers.paths import atomic_write_text, repo_path
from helpers.train.checkpoints import (
    TrainRun,
    list_checkpoints,
    load_checkpoint,
    prune_optimizer_states,
    read_run,
    remove_stale,
    write_checkpoint,
)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase



def build_model(config: ModelConfig, seed: int = 0) -> torch.nn.Module:
    """A freshly initialised GPT-2 LM (tied embeddings, no dropout, eager attention so attention
    weights can be read), initialised from ``torch.manual_seed(seed)``."""
    from transformers import GPT2Config, GPT2LMHeadModel

    if config.n_embd % config.n_head:
        raise CompendiumError(f"n_embd={config.n_embd} is not divisible by n_head={config.n_head}")
    cfg = GPT2Config(
        vocab_size=config.vocab_size,
        n_positions=config.n_positions,
        n_embd=config.n_embd,
        n_layer=config.n_layer,
        n_head=config.n_head,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=config.vocab_size - 1,
        eos_token_id=config.vocab_size - 1,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    return GPT2LMHeadModel(cfg)


def lr_at(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Learning rate at optimiser step ``step`` (0-based): linear warmup, then cosine decay."""
    warm = max(1, int(round(cfg.warmup_frac * total_steps)))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress = min(1.0, (step - warm) / max(1, total_steps - warm))
    floor = cfg.min_lr_frac * cfg.lr
    return floor + (cfg.lr - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def window_loss(model: torch.nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy of ``model`` on windows [B, T+1] (reads T, predicts T)."""
    logits = model(input_ids=windows[:, :-1], use_cache=False).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), windows[:, 1:].reshape(-1))


@torch.no_grad()
def evaluate_loss(model: torch.nn.Module, windows: np.ndarray, batch_size: int = 128, device: str = "cpu") -> float:
    """Mean next-token cross-entropy (nats/token) of ``model`` over all positions of ``windows`` [N, T+1]."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    data = torch.as_tensor(np.asarray(windows), dtype=torch.long)
    for s in range(0, len(data), batch_size):
        batch = data[s : s + batch_size].to(device)
        n = batch[:, 1:].numel()
        total += float(window_loss(model, batch)) * n
        count += n
    model.train(was_training)
    return total / max(1, count)


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Use deterministic torch algorithms inside the block, then restore the previous setting."""
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def train_lm(
    model_config: ModelConfig,
    train_config: TrainConfig,
    train_windows: np.ndarray,
    val_windows: np.ndarray,
    run_dir: str | Path,
    device: str = "cpu",
    progress: bool = True,
    tokenizer: PreTrainedTokenizerBase | None = None,
    stop_after: int | None = None,
    description: str = "training",
) -> TrainRun:
    """Train (or resume, or just reload) a GPT-2 LM on ``train_windows`` [N, T+1].

    Checkpoints ``run_dir/epoch_000`` (initialisation) .. ``epoch_{epochs}``; existing complete
    checkpoints are reused and training resumes after the last one. Batch order of epoch ``e`` is a
    permutation drawn from a generator seeded with ``(seed, e)``, so a resumed run gives the same
    weights as an uninterrupted one. ``stop_after`` stops after that epoch (to simulate a kill).
    ``tokenizer`` (natural text) is saved with every checkpoint.
    """
    run_dir = repo_path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    remove_stale(run_dir)
    train = torch.as_tensor(np.asarray(train_windows), dtype=torch.long)
    if train.ndim != 2 or train.shape[1] < 2 or len(train) == 0:
        raise CompendiumError(f"training windows must be a non-empty [N, T+1] array, got {tuple(train.shape)}")
    if train.shape[1] - 1 > model_config.n_positions:
        raise CompendiumError(
            f"windows read {train.shape[1] - 1} tokens but the model has n_positions={model_config.n_positions}"
        )
    cfg = train_config
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    config = {"model": asdict(model_config), "train": asdict(cfg), "n_train": len(train)}
    atomic_write_text(run_dir / "config.json", json.dumps(config, indent=1, default=str))

    done = list_checkpoints(run_dir)
    t_start = time.perf_counter()
    with deterministic():
        if done:
            last = done[-1]
            state = json.loads((last / "state.json").read_text())
            epoch, step, history = state["epoch"], state["step"], state["history"]
            if epoch >= cfg.epochs or (stop_after is not None and epoch >= stop_after):
                return read_run(run_dir, config)
            model = load_checkpoint(last, device).model
            optimizer = _optimizer(model, cfg)
            if not (last / "optimizer.pt").is_file():
                raise CompendiumError(f"{last} has no optimizer state: delete {run_dir} and train again")
            optimizer.load_state_dict(torch.load(last / "optimizer.pt", map_location=device))
        else:
            model = build_model(model_config, cfg.seed).to(device)
            optimizer = _optimizer(model, cfg)
            epoch, step = 0, 0
            val0 = evaluate_loss(model, val_windows, cfg.eval_batch_size, device)
            history = [{"epoch": 0, "step": 0, "train_loss": float("nan"), "val_loss": val0, "seconds": 0.0}]
            write_checkpoint(run_dir, 0, model, optimizer, {"epoch": 0, "step": 0, "history": history}, tokenizer)
        last_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, stop_after)
        trained = 0
        bar = tqdm(range(epoch + 1, last_epoch + 1), desc=description, disable=not progress,
                   initial=epoch, total=last_epoch)
        for ep in bar:
            t0 = time.perf_counter()
            losses, step = train_epoch(model, optimizer, train, cfg, ep, step, total_steps, device, progress)
            val = evaluate_loss(model, val_windows, cfg.eval_batch_size, device)
            history.append({"epoch": ep, "step": step, "train_loss": float(np.mean(losses)), "val_loss": val,
                            "seconds": time.perf_counter() - t0})
            bar.set_postfix(train=f"{history[-1]['train_loss']:.3f}", val=f"{val:.3f}")
            ck = write_checkpoint(run_dir, ep, model, optimizer,
                                   {"epoch": ep, "step": step, "history": history}, tokenizer)
            prune_optimizer_states(run_dir, ck)
            trained += 1
    return read_run(run_dir, config, trained, time.perf_counter() - t_start)


def train_epoch(model: torch.nn.Module, optimizer: torch.optim.Optimizer, train: torch.Tensor, cfg: TrainConfig,
                epoch: int, step: int, total_steps: int, device: str = "cpu",
                progress: bool = True) -> tuple[list[float], int]:
    """One epoch over ``train`` [N, T+1] in the seeded order of ``epoch``; returns the batch losses and the step
    count after it (the learning rate follows :func:`lr_at` of the global step)."""
    model.train()
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    order = torch.randperm(len(train), generator=gen)
    losses = []
    steps_per_epoch = math.ceil(len(train) / cfg.batch_size)
    inner = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}", leave=False, disable=not progress, mininterval=2.0)
    for b in inner:
        batch = train[order[b * cfg.batch_size : (b + 1) * cfg.batch_size]].to(device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, total_steps, cfg)
        loss = window_loss(model, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        step += 1
        losses.append(float(loss.detach()))
        if b % 20 == 0:
            inner.set_postfix(loss=f"{np.mean(losses[-20:]):.3f}")
    return losses, step


def _optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, foreach=False)
