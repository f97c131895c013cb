"""Runs over several processes started by the standard launchers (``torchrun``, ``accelerate launch``).

Both launchers set ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``. Each rank analyses its own deterministic shard
(``rank/world``) on its own device (``cuda:LOCAL_RANK`` on GPUs), then all ranks meet at a barrier (gloo on CPU,
nccl on GPU) and rank 0 merges the finished shards into exactly the tables one process gives. Without a
launcher (``WORLD_SIZE`` unset or 1) nothing here changes anything; schedulers without a launcher (SLURM
arrays) use ``--shard i/n`` and ``merge`` instead.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from helpers import CompendiumError


@dataclass(frozen=True)
class Launch:
    """This process's place in a launcher's process group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        """Whether a launcher started several processes."""
        return self.world > 1

    @property
    def shard(self) -> str:
        """This rank's shard, ``rank/world``."""
        return f"{self.rank}/{self.world}"

    def device(self, device: str) -> str:
        """``cuda`` -> ``cuda:LOCAL_RANK`` (one device per local rank); other devices unchanged."""
        if self.distributed and device == "cuda":
            return f"cuda:{self.local_rank}"
        return device


def from_env(env: dict | None = None) -> Launch:
    """The launch read from ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` (torchrun, accelerate launch)."""
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise CompendiumError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun / accelerate)") from None
    if world < 1 or not 0 <= rank < world:
        raise CompendiumError(f"RANK={rank} and WORLD_SIZE={world} are inconsistent: need 0 <= RANK < WORLD_SIZE")
    return Launch(rank, world, local)


def init_group(launch: Launch, device: str) -> None:
    """Join the launcher's process group (nccl for CUDA devices, gloo otherwise)."""
    import torch.distributed as dist

    if launch.distributed and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")


def barrier_and_close(launch: Launch) -> None:
    """Wait until every rank has finished its shard, then leave the group."""
    import torch.distributed as dist

    if launch.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
