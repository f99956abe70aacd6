"""Training processes: one, or several under torchrun with DistributedDataParallel.

    torchrun --standalone --nproc_per_node=2 -m molgan train --config configs/debug.yaml

torchrun starts K copies of the command and tells each its place through environment variables
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). ``start`` reads them,
joins the process group (gloo on the CPU, NCCL on CUDA) and leaves it at the end, errors
included. Without torchrun (or with one process) it returns ``Processes``, whose collectives
hand back their input: the trainer calls the same methods either way and a single process
behaves exactly as if this module did not exist (no process group, no wrapper, no exchange).

The collectives are the few the trainer needs, each cheap: reward means, the statistics that
standardise the critic's reward and logged statistics (a few floats), the SMILES of a step (short
strings), a stop flag, random generator states and parameter checksums (at checkpoints).
Gradients travel through DDP.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from molgan.checkpoint import tensor_digest
from molgan.device import DeviceError, resolve_device


class Processes:
    """A single training process: rank 0 of 1, every collective a no-op."""

    rank = 0
    local_rank = 0
    world_size = 1

    def __init__(self, device: torch.device) -> None:
        self.device = device

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes files and evaluates."""
        return self.rank == 0

    def wrap(self, module: nn.Module) -> nn.Module:
        """The module whose backward passes average gradients over the processes."""
        return module

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        """Mean of ``values`` (B,) over every process's share of the batch (equal shares)."""
        return values.mean()

    def total(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` (any shape) summed element-wise over the processes."""
        return values

    def mean_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """Each statistic averaged over the processes (all log the same keys)."""
        return stats

    def gather_strings(self, items: list[str]) -> list[str]:
        """Every process's ``items``, concatenated in rank order (the same list on every rank)."""
        return items

    def gather_objects(self, item: Any) -> list[Any]:
        """One small JSON-like value from each process, by rank."""
        return [item]

    def gather_tensors(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        """One tensor (same shape and dtype everywhere) from each process, by rank, on the CPU."""
        return [tensor.cpu()]

    def agree_to_stop(self, signal_number: int, out_of_time: bool) -> tuple[int, bool]:
        """(signal, out of time) as all processes see them: the largest signal number any
        process received (0: none), and whether rank 0's clock says the time is up."""
        return signal_number, out_of_time

    def barrier(self) -> None:
        """Wait until every process gets here (while rank 0 evaluates or writes)."""


class ProcessGroup(Processes):
    """One of ``world_size`` processes in a torch.distributed process group."""

    def __init__(self, rank: int, local_rank: int, world_size: int, device: torch.device) -> None:
        super().__init__(device)
        self.rank, self.local_rank, self.world_size = rank, local_rank, world_size

    def wrap(self, module: nn.Module) -> nn.Module:
        device_ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(module, device_ids=device_ids)

    def mean(self, values: torch.Tensor) -> torch.Tensor:
        total = values.sum()
        dist.all_reduce(total)
        return total / (values.numel() * self.world_size)

    def total(self, values: torch.Tensor) -> torch.Tensor:
        summed = values.clone()  # all_reduce works in place; the caller keeps its own values
        dist.all_reduce(summed)
        return summed

    def mean_stats(self, stats: dict[str, float]) -> dict[str, float]:
        keys = list(stats)  # every process builds its statistics in the same order
        values = torch.tensor([stats[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(values)
        return dict(zip(keys, (values / self.world_size).tolist(), strict=True))

    def gather_strings(self, items: list[str]) -> list[str]:
        return [item for part in self.gather_objects(items) for item in part]

    def gather_objects(self, item: Any) -> list[Any]:
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, item)
        return gathered

    def gather_tensors(self, tensor: torch.Tensor) -> list[torch.Tensor]:
        local = tensor.to(self.device)
        gathered = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(gathered, local)
        return [t.cpu() for t in gathered]

    def agree_to_stop(self, signal_number: int, out_of_time: bool) -> tuple[int, bool]:
        # Only rank 0's clock counts, so that every process stops after the same step.
        flags = torch.tensor(
            [signal_number, int(out_of_time and self.is_main)], dtype=torch.int64, device=self.device
        )
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        return int(flags[0]), bool(flags[1])

    def barrier(self) -> None:
        dist.barrier()


def _process_device(name: str, local_rank: int) -> torch.device:
    """The device of the process of ``local_rank`` on its machine, for the device ``name``."""
    device = resolve_device(name)
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise DeviceError(f"{name!r}: several processes train on the CPU or on CUDA GPUs only")
    if name.startswith("cuda:"):
        raise DeviceError(f"{name!r} names one GPU for several processes; use cuda (each process "
                          "takes the GPU of its local rank)")
    if local_rank >= torch.cuda.device_count():
        raise DeviceError(f"process of local rank {local_rank} has no GPU: this machine has "
                          f"{torch.cuda.device_count()}")
    return torch.device("cuda", local_rank)


@contextmanager
def start(device: str) -> Iterator[Processes]:
    """The processes of this run: a ``ProcessGroup`` under torchrun with more than one process,
    else a single ``Processes`` on ``device`` (a name of ``molgan.device``). DeviceError if the
    device is not on this machine."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        yield Processes(resolve_device(device))
        return
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    where = _process_device(device, local_rank)
    if where.type == "cuda":
        torch.cuda.set_device(where)
        dist.init_process_group("nccl", device_id=where)
    else:
        dist.init_process_group("gloo")
    try:
        yield ProcessGroup(rank, local_rank, world_size, where)
    finally:
        dist.destroy_process_group()


def rank_seed(seed: int, step: int, rank: int) -> int:
    """A seed for the random streams of ``rank`` from ``step`` on: for a run of several processes,
    and for a run resumed with another number of processes (or on another kind of device), whose
    saved generator states do not fit. Deterministic, and far apart for nearby arguments."""
    digest = hashlib.sha256(f"molgan:{seed}:{step}:{rank}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1  # manual_seed takes up to 2**63 - 1


def parameter_digest(modules: Iterable[nn.Module]) -> str:
    """sha256 of the names and bytes of the modules' tensors: equal on every process exactly when
    their parameters are."""
    return tensor_digest(
        {f"{i}.{name}": t for i, module in enumerate(modules) for name, t in module.state_dict().items()}
    )
