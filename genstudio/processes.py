"""The processes a command runs on (`accelerate launch`, torchrun): which one this is, its device, and the
gathering of work split among them. One process (no launcher) needs no torch.distributed at all.

Work is split by batch: batch b of a fixed batch size goes to process b % world, so every batch, and every
image in it, is what one process would compute; `gather_batches` puts the pieces back in batch order.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

import torch


@dataclass(frozen=True)
class Processes:
    rank: int = 0
    world: int = 1
    device: torch.device | None = None  # this process's accelerator under a launcher (None: the caller's choice)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def mine(self, count: int) -> list[int]:
        """The indices of `count` batches this process computes."""
        return list(range(self.rank, count, self.world))

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """The main process runs the block first (it fills a cache), the others after it."""
        if not self.main:
            self.barrier()
        yield
        if self.main:
            self.barrier()

    def gather_batches(self, local: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        """All processes' rows in batch order: `local` holds this process's batches (`mine(len(sizes))`)
        concatenated, `sizes` every batch's row count. Every process gets the whole."""
        if self.world == 1:
            return local
        import torch.distributed as dist

        rows = [sum(sizes[b] for b in range(r, len(sizes), self.world)) for r in range(self.world)]
        backend_device = torch.device("cuda", torch.cuda.current_device()) \
            if dist.get_backend() == "nccl" else torch.device("cpu")
        padded = torch.zeros((max(rows), *local.shape[1:]), dtype=local.dtype, device=backend_device)
        padded[:len(local)] = local.to(backend_device)
        parts = [torch.empty_like(padded) for _ in range(self.world)]
        dist.all_gather(parts, padded)
        pieces, offsets = [], [0] * self.world
        for b, size in enumerate(sizes):
            r = b % self.world
            pieces.append(parts[r][offsets[r]:offsets[r] + size])
            offsets[r] += size
        return torch.cat(pieces).to(local.device)


def current() -> Processes:
    """This process among those it was launched with (WORLD_SIZE, RANK: torch.distributed's environment); the
    process group is set up by Accelerate's PartialState on first use."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return Processes()
    from accelerate import PartialState

    cpu = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)  # as Accelerator decides it: processes on CPUs need cpu=True
    return Processes(state.process_index, state.num_processes, state.device)
