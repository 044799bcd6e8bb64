"""torch.distributed plumbing for `torchrun`: env:// init, rank queries and metric all-reduce.

One process per device. Without torchrun's variables everything degrades to a single process.
"""

from __future__ import annotations

import atexit
import gc
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from mgvideo.multigrid.batchnorm import release_sync_groups


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits: global rank, world size, and its device index on the node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 logs and writes checkpoints."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init(device: torch.device, timeout_minutes: float = 10.0) -> DistInfo:
    """Join the process group torchrun described in the environment (gloo on CPU, NCCL on CUDA); the
    rendezvous store and every collective give up after `timeout_minutes` (`train.dist_timeout_minutes`)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        timeout = timedelta(minutes=timeout_minutes)
        dist.init_process_group(backend, store=_attempt_store(rank, world_size, timeout), rank=rank,
                                world_size=world_size, timeout=timeout)
    return DistInfo(rank, world_size, local_rank)


def _attempt_store(rank: int, world_size: int, timeout: timedelta) -> dist.Store:
    """A key-value store for this attempt's process group, holding nothing from an earlier attempt.

    Without torchelastic's agent store, MASTER_PORT is new for each attempt and rank 0 hosts it. With it
    (torchrun's default), the agents' store outlives restarts and still holds the dead workers' addresses,
    and node agents may count restarts differently (one restarts after a failure, another after the
    membership change it caused), so no name derived from the restart count is shared. Rank 0 then hosts
    a fresh store and publishes its port, with a nonce, in the agents' store (`_join_fresh_store`).
    """
    addr, port = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"])
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() != "true":
        return dist.TCPStore(addr, port, world_size, is_master=rank == 0, timeout=timeout)
    agents = dist.TCPStore(addr, port, world_size, is_master=False, timeout=timeout)
    if rank == 0:
        store = dist.TCPStore(addr, 0, world_size, is_master=True, timeout=timeout, wait_for_workers=False)
        nonce = os.urandom(8).hex()
        store.set(_NONCE, nonce)
        agents.set(_PUBLISHED, f"{store.port}:{nonce}")
        return store
    return _join_fresh_store(agents, addr, world_size, timeout)


_PUBLISHED, _NONCE = "mgvideo/attempt_store", "mgvideo/nonce"


def _join_fresh_store(agents: dist.Store, addr: str, world_size: int, timeout: timedelta) -> dist.Store:
    """Connect to the store rank 0 published for this attempt. A publication left by an earlier attempt
    names a port that is closed (its rank 0 is gone) or reused with another nonce: read it again."""
    deadline = time.monotonic() + timeout.total_seconds()
    while True:
        port, nonce = agents.get(_PUBLISHED).decode().split(":")
        try:
            store = dist.TCPStore(addr, int(port), world_size, is_master=False, timeout=timedelta(seconds=5))
            if store.get(_NONCE).decode() == nonce:
                store.set_timeout(timeout)
                return store
        except (RuntimeError, TimeoutError):  # refused, or no such key in time
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"no store from rank 0 within {timeout} (train.dist_timeout_minutes)")
        time.sleep(0.5)


def local_device(device: torch.device, info: DistInfo) -> torch.device:
    """This process's device: `cuda:local_rank` under torchrun on CUDA, else `device` unchanged."""
    if device.type == "cuda" and info.enabled:
        return torch.device("cuda", info.local_rank)
    return device


def all_reduce_tensor(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum `tensor` over all ranks in place and return it (identity in a single process)."""
    if info.enabled:
        dist.all_reduce(tensor)
    return tensor


def all_gather_cat(tensor: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate equal-shaped tensors from all ranks along dim 0 (identity in a single process)."""
    if not info.enabled:
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(info.world_size)]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def all_gather_object(obj: Any, info: DistInfo) -> list[Any]:
    """Every rank's `obj` (small, picklable: our own processes' notes, never data read from a file), in rank
    order; [obj] in a single process."""
    if not info.enabled:
        return [obj]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_bytes(data: bytes | None, src: int, info: DistInfo, device: torch.device) -> bytes:
    """Rank `src`'s `data` on every rank (a checkpoint file, sent as a uint8 tensor: no unpickling)."""
    if not info.enabled:
        assert data is not None
        return data
    on = device if device.type == "cuda" else torch.device("cpu")  # NCCL sends device tensors only
    size = torch.tensor([len(data) if data is not None else 0], dtype=torch.int64, device=on)
    dist.broadcast(size, src)
    if data:
        buffer = torch.frombuffer(bytearray(data), dtype=torch.uint8).to(on)
    else:
        buffer = torch.empty(int(size.item()), dtype=torch.uint8, device=on)
    if buffer.numel():
        dist.broadcast(buffer, src)
    return data if data is not None else buffer.cpu().numpy().tobytes()


def barrier(info: DistInfo) -> None:
    """Wait for every rank (no-op in a single process)."""
    if info.enabled:
        dist.barrier()


def shutdown(info: DistInfo) -> None:
    """Leave the process group at the end of a run, unless `keep_process_group` keeps it for more runs."""
    if info.enabled and not _KEPT:
        leave()


def leave() -> None:
    """Destroy the process group cleanly: first drop what still holds its groups (the cached BN sync
    groups, then any finished autograd graph), so that none outlives destroy_process_group."""
    if dist.is_available() and dist.is_initialized():
        release_sync_groups()
        gc.collect()
        dist.destroy_process_group()


_KEPT: list[bool] = []


def keep_process_group() -> None:
    """For a process that trains several runs in turn (`bench tta` under torchrun): the first run's process
    group serves them all (joining again would reuse the store's keys), and is left once, at exit."""
    if not _KEPT:
        _KEPT.append(True)
        atexit.register(leave)
