"""Several GPUs or machines through ``torchrun`` and torch.distributed (DistributedDataParallel).

``torchrun --nproc_per_node 4 -m unetseg train ...`` starts one process per GPU; each takes its share of every global
batch (``--batch-size`` stays the global batch), gradients are averaged by DDP, rank 0 writes the run folder. On CPUs
the gloo backend runs the same way (used by the tests).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from unetseg._device import resolve_device


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (a single process is rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1  # processes on this node

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def broadcast_int(self, value: int, device: torch.device) -> int:
        """Rank 0's ``value`` on every process (e.g. a re-planned step count)."""
        if self.size == 1:
            return value
        t = torch.tensor([value], device=device)
        dist.broadcast(t, 0)
        return int(t.item())

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's ``obj`` (picklable) on every process (e.g. a budget plan)."""
        if self.size == 1:
            return obj
        payload = [obj]
        dist.broadcast_object_list(payload, src=0)
        return payload[0]

    @torch.no_grad()
    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Rank 0's parameters and buffers into ``module`` on every process (batch-norm statistics drift apart:
        each process updates them with its own share of the batch)."""
        if self.size == 1:
            return
        for t in module.state_dict().values():
            dist.broadcast(t, 0)

    def sum(self, t: torch.Tensor) -> torch.Tensor:
        """The sum of ``t`` over all processes."""
        if self.size == 1:
            return t
        t = t.clone()
        dist.all_reduce(t)
        return t


def init_world(device: str, timeout_minutes: float = 30.0) -> tuple[World, torch.device]:
    """Join the process group that torchrun set up (WORLD_SIZE > 1) and pick this process's device:
    ``cuda:LOCAL_RANK`` with NCCL where CUDA is there, else the CPU with gloo. A collective that waits longer than
    ``timeout_minutes`` for a peer fails instead of hanging the job."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(), resolve_device(device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    local_size = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    chosen = process_device(device, local_rank, local_size)
    if chosen.type == "cuda":
        torch.cuda.set_device(chosen)
    backend = "nccl" if chosen.type == "cuda" else "gloo"
    if not dist.is_initialized():
        from torch.distributed.rendezvous import rendezvous

        timeout = timedelta(minutes=timeout_minutes)
        store, rank, size = next(rendezvous("env://", timeout=timeout))
        # torchrun --max-restarts reuses its store: keys of each attempt apart, so that a restarted process never
        # reads the address of a process of the attempt before (gloo: "connectFullMesh failed ... refused")
        store = dist.PrefixStore(f"unetseg/attempt-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        dist.init_process_group(backend, store=store, rank=rank, world_size=size, timeout=timeout)
    return World(rank, size, local_rank, local_size), chosen


def process_device(device: str, local_rank: int, local_size: int) -> torch.device:
    """The device of one torchrun process for a ``--device`` setting: ``auto`` -> ``cuda:LOCAL_RANK`` where CUDA is
    there, else the CPU; ``cuda`` -> ``cuda:LOCAL_RANK``; ``cpu`` -> the CPU; ``cuda:N`` -> that GPU where it is this
    node's only process. A device the user named is used or refused, never replaced.

    Raises:
        ValueError: one line, for a device this process cannot have.
    """
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return torch.device("cpu")
    try:
        named = torch.device(device)
    except RuntimeError:
        raise ValueError(f"--device {device}: not a device name (auto, cpu, cuda, cuda:1, ...)") from None
    if named.type != "cuda":
        raise ValueError(f"--device {device}: under torchrun each process takes a GPU (cuda) or the CPU (cpu)")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if named.index is not None and local_size > 1:
        raise ValueError(f"--device {device} under torchrun: the {local_size} processes of this node would share one "
                         f"GPU; give --device cuda (process i takes cuda:i) and choose the GPUs with "
                         f"CUDA_VISIBLE_DEVICES")
    index = local_rank if named.index is None else named.index
    if index >= count:
        raise ValueError(f"--device {device}: process {local_rank} of this node needs cuda:{index}, but "
                         f"{count} CUDA device(s) are visible here")
    return torch.device("cuda", index)


def close_world(world: World) -> None:
    """Leave the process group."""
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def check_batches(n_train: int, batch_size: int, processes: int, sync_bn: bool = False) -> None:
    """The smallest job that can train: one process trains any set (its last batch may be partial); several need a
    global batch of at least one image each, full batches only (each step splits one over the processes, the last
    partial batch is dropped), so at least ``batch_size`` training images, and with SyncBatchNorm a batch that splits
    evenly (every forward pass is a collective: the processes must run as many).

    Raises:
        ValueError: one line, with the largest batch that trains.
    """
    if processes == 1:
        return
    if n_train < processes:
        raise ValueError(f"{n_train} training image(s) for {processes} processes: each process needs at least one "
                         f"image per step; train with fewer processes (torchrun --nproc_per_node) or more images")
    step = processes if sync_bn else 1
    largest = n_train - n_train % step
    if batch_size < processes:
        raise ValueError(f"--batch-size {batch_size} is the global batch; it needs at least one image for each of "
                         f"the {processes} processes (give --batch-size {processes} or more)")
    if sync_bn and batch_size % processes:
        raise ValueError(f"--sync-bn: --batch-size {batch_size} does not split evenly over {processes} processes, so "
                         f"they would run different numbers of forward passes; give a multiple of {processes}")
    if n_train < batch_size:
        raise ValueError(f"{n_train} training images for --batch-size {batch_size} over {processes} processes: "
                         f"several processes train on full batches only; give --batch-size {largest} or fewer")


def batch_for(wanted: int, n_train: int, processes: int) -> int:
    """A planned global batch near ``wanted`` that :func:`check_batches` accepts: a multiple of the processes (even
    shares, SyncBatchNorm too), at most the training images where several processes train."""
    if processes == 1:
        return wanted
    fits = max(processes, n_train - n_train % processes)
    return max(processes, min(wanted - wanted % processes, fits))
