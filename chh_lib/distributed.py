"""Data-parallel training over several processes (``torchrun``), and what each process does.

``chh train --nproc K`` (or ``torchrun --nproc-per-node K -m chh_lib.cli train ...``)
starts K processes; each trains a copy of the network on its share of every
batch and DistributedDataParallel averages the gradients, so all copies stay
equal. The rules the kit follows:

* **The global batch is the profile's.** Each of the K processes takes
  ``batch_size / K`` images per step (``batch_size`` must be divisible by K) and
  the learning rate is unchanged, so a K-process run takes the same optimiser
  steps on the same number of images as a single process. BatchNorm statistics
  are computed per process, on the smaller per-process batch.
* **Which images, in which order.** A ``DistributedSampler`` (seeded with
  ``train.seed``, reshuffled every epoch) gives each process a disjoint share of
  the training images, padded by repetition to equal shares. The order differs
  from a single process's, so the two runs are not bit-identical; their losses
  agree to within the noise of the batch order.
* **Seeds.** Every process builds the network from the same seed (DDP also
  broadcasts rank 0's weights), and an image's augmentation is seeded by
  ``(seed, epoch, image index)``, whatever process draws it.
* **Rank 0 alone writes**: config, manifest, checkpoints, ``train_log.csv``,
  ``train.log``, the progress bar and the held-out loss. Every process reads the
  checkpoint when resuming.

On CUDA each process uses the GPU ``LOCAL_RANK`` and the NCCL backend; on a CPU
the gloo backend (what the tests use).
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from chh_lib.errors import ConfigError

__all__ = [
    "SINGLE_PROCESS",
    "DistributedContext",
    "context_from_environment",
    "launch_command",
    "per_process_batch_size",
    "process_group",
    "sum_over_processes",
]


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a data-parallel run.

    Attributes
    ----------
    rank : int
        0 .. world_size - 1; rank 0 writes the run's files.
    world_size : int
        Number of processes (1: an ordinary run).
    local_rank : int
        Rank on this machine; the CUDA device a process uses.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when more than one process trains."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """True on the process that writes files and prints."""
        return self.rank == 0

    def device(self, device: torch.device) -> torch.device:
        """The device this process trains on: ``cuda:LOCAL_RANK`` in a multi-process CUDA run, else ``device``."""
        if self.enabled and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def barrier(self) -> None:
        """Wait until every process gets here (nothing in a single-process run)."""
        if self.enabled:
            dist.barrier()


#: The context of an ordinary, single-process run.
SINGLE_PROCESS = DistributedContext()


def context_from_environment(environment: dict[str, str] | None = None) -> DistributedContext:
    """The context ``torchrun`` describes in ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` (single process when unset).

    Raises
    ------
    ConfigError
        When the variables are not integers or describe an impossible rank.
    """
    values = os.environ if environment is None else environment
    try:
        context = DistributedContext(int(values.get("RANK", 0)), int(values.get("WORLD_SIZE", 1)),
                                     int(values.get("LOCAL_RANK", 0)))
    except ValueError as error:
        raise ConfigError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers: {error}") from None
    if context.world_size < 1 or not 0 <= context.rank < context.world_size or context.local_rank < 0:
        raise ConfigError(f"impossible process rank {context.rank} of {context.world_size} "
                          f"(local rank {context.local_rank})")
    return context


def per_process_batch_size(batch_size: int, world_size: int) -> int:
    """Images per process and step so that the global batch stays ``batch_size``.

    Raises
    ------
    ConfigError
        When ``batch_size`` is not a multiple of ``world_size``.
    """
    if batch_size % world_size:
        raise ConfigError(f"the batch of {batch_size} images cannot be split evenly over {world_size} processes; "
                          f"use a number of processes that divides it")
    return batch_size // world_size


@contextlib.contextmanager
def process_group(context: DistributedContext, device: torch.device) -> Iterator[None]:
    """Join the process group for the block (NCCL on CUDA, gloo otherwise); a no-op for one process."""
    if not context.enabled or dist.is_initialized():
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(context.local_rank)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", rank=context.rank,
                            world_size=context.world_size)
    try:
        yield
    finally:
        dist.destroy_process_group()


def sum_over_processes(values: Sequence[float], context: DistributedContext) -> list[float]:
    """Element-wise sums of ``values`` over all processes (the values themselves for one process)."""
    if not context.enabled:
        return [float(v) for v in values]
    tensor = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor.tolist()


def launch_command(num_processes: int, cli_arguments: Sequence[str]) -> list[str]:
    """The ``torchrun`` command that runs ``chh <cli_arguments>`` in ``num_processes`` processes on this machine."""
    if num_processes < 2:
        raise ConfigError(f"a multi-process run needs at least 2 processes, got {num_processes}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={num_processes}",
            "-m", "chh_lib.cli", *cli_arguments]
