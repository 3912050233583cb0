"""Training on several processes (GPUs, machines) with ``torch.distributed``: the process group, data shards, means.

``facemagic train`` started by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``) trains with DistributedDataParallel:

- the config's ``batch_size`` is the batch of *one* process; a step trains on
  ``batch_size x world_size`` faces, and N processes follow the loss trajectory of one process
  with an N times larger batch (up to floating-point summation order);
- every process draws the same global batch from the seeded :class:`~.data.PairSampler` and reads
  only its share of it (rows ``rank, rank + N, ...``), as ``torch.utils.data.DistributedSampler``
  shards a dataset: the same-image, swap and mixed rows are spread evenly over the processes, so
  the mean of the per-process losses is the loss of the global batch;
- DDP averages the gradients; every process then takes the same optimiser step, and keeps the
  same EMA copy;
- process 0 alone writes losses.csv (the mean over the processes), the sample grids, the
  checkpoints and the training state; a resume reads that state in every process.

Backends: ``nccl`` on CUDA, ``gloo`` on the CPU (the tests run 2 CPU processes with gloo).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import BadInputError
from .data import PairIndices

logger = logging.getLogger(__name__)

#: Environment variables torchrun sets, read by :func:`context_from_environment`.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a multi-process run (one process: rank 0 of 1)."""

    rank: int = 0  # this process, 0 .. world_size - 1
    world_size: int = 1  # processes taking part
    local_rank: int = 0  # this process on its machine (its GPU index)
    backend: str = ""  # "gloo" or "nccl" once the process group is up; "" for one process

    @property
    def is_main(self) -> bool:
        """Whether this process writes the run's files (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, environ: Mapping[str, str]) -> int:
    value = environ.get(name, "")
    try:
        number = int(value)
    except ValueError:
        raise BadInputError(
            f"the environment variable {name}={value!r} is not a whole number",
            where="distributed training",
            fix="start the run with torchrun (it sets RANK, WORLD_SIZE and LOCAL_RANK), or unset them",
        ) from None
    return number


def context_from_environment(environ: Mapping[str, str] | None = None) -> DistributedContext:
    """The run's place from torchrun's variables (no ``WORLD_SIZE``, or 1: a one-process run)."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env or _env_int("WORLD_SIZE", env) <= 1:
        return DistributedContext()
    world = _env_int("WORLD_SIZE", env)
    rank = _env_int("RANK", env) if "RANK" in env else -1
    local = _env_int("LOCAL_RANK", env) if "LOCAL_RANK" in env else rank
    if not 0 <= rank < world:
        raise BadInputError(
            f"RANK={env.get('RANK')!r} does not lie in 0 .. WORLD_SIZE - 1 = {world - 1}",
            where="distributed training",
            fix="start the run with torchrun --nproc-per-node N facemagic train ...",
        )
    missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not env.get(name)]
    if missing:
        raise BadInputError(
            f"WORLD_SIZE={world} but {' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not set",
            where="distributed training",
            fix="start the run with torchrun, which sets them (or set them to the address and a free port of rank 0)",
        )
    return DistributedContext(rank=rank, world_size=world, local_rank=local)


def device_for(context: DistributedContext, device: torch.device) -> torch.device:
    """One GPU per process: ``cuda`` becomes ``cuda:LOCAL_RANK``; other devices stay as they are."""
    if context.active and device.type == "cuda" and device.index is None:
        return torch.device("cuda", context.local_rank)
    return device


def init_process_group(context: DistributedContext, device: torch.device) -> DistributedContext:
    """Join the process group (env:// rendezvous); returns the context with its backend. One process: unchanged."""
    if not context.active:
        return context
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_available():
        raise BadInputError(
            "this torch build has no torch.distributed", where="distributed training", fix="install a standard torch"
        )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=context.rank, world_size=context.world_size)
    logger.info("process %d of %d joined the %s process group", context.rank, context.world_size, backend)
    return DistributedContext(context.rank, context.world_size, context.local_rank, backend)


def shard_pairs(pairs: PairIndices, context: DistributedContext) -> PairIndices:
    """This process's share of a global batch: rows ``rank, rank + world_size, ...`` (every row when alone)."""
    if not context.active:
        return pairs
    rows = slice(context.rank, None, context.world_size)
    return PairIndices(
        target=pairs.target[rows],
        source=pairs.source[rows],
        second_source=pairs.second_source[rows],
        split=pairs.split[rows],
        same=pairs.same[rows],
    )


def mean_over_processes(
    values: Mapping[str, float], names: Sequence[str], context: DistributedContext, device: torch.device
) -> dict[str, float]:
    """The mean of each value over the processes that have it (one all-reduce); ``names`` fixes the order."""
    if not context.active:
        return dict(values)
    packed = torch.zeros(2 * len(names), dtype=torch.float64)
    for number, name in enumerate(names):
        if name in values:
            packed[2 * number] = float(values[name])
            packed[2 * number + 1] = 1.0
    packed = packed.to(device)
    dist.all_reduce(packed)
    packed = packed.cpu()
    return {
        name: float(packed[2 * n] / packed[2 * n + 1]) for n, name in enumerate(names) if float(packed[2 * n + 1]) > 0
    }


def all_true(flag: bool, context: DistributedContext, device: torch.device) -> bool:
    """Whether ``flag`` holds in every process (so that all of them stop together, none waits forever)."""
    if not context.active:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MIN)
    return bool(value.item() > 0.5)


def barrier(context: DistributedContext) -> None:
    if context.active and dist.is_initialized():
        dist.barrier()


def destroy_process_group(context: DistributedContext) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()
