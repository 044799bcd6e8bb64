"""Multigrid under Hugging Face Accelerate: keep the multigrid batch sampler whole through `prepare`.

On more than one process, `accelerator.prepare(loader)` wraps the loader's batch sampler in its own
`BatchSamplerShard`, which hands batch i of every process's sampler to process i % n (accelerate 1.15;
pinned by tests/test_integrations_accelerate.py). Our sampler already gives each rank its own share of the
epoch, with the same shape on every rank at every iteration, so that wrapping would drop half of each rank's
batches and put different shapes on different ranks, and cross-device BN would wait on collectives that
never pair up.
`prepare_loader` instead returns the loader's batches as they are, moved to the accelerator's device:

    sampler = MultigridBatchSampler(schedule, len(dataset), batch_size, rank=accelerator.process_index,
                                    world_size=accelerator.num_processes)
    loader = prepare_loader(accelerator, DataLoader(dataset, batch_sampler=sampler))
    model, optimizer = accelerator.prepare(model, optimizer)  # passing `loader` too is harmless

The loop then calls `sampler.set_epoch(epoch)` and, per batch, `integrations.step.configure_step`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import send_to_device
from torch.utils.data import DataLoader

from mgvideo.errors import ConfigError
from mgvideo.multigrid.sampler import FixedShapeBatchSampler, MultigridBatchSampler


class DeviceLoader:
    """A DataLoader's batches, unchanged, on `device`. Not a DataLoader, so `accelerator.prepare` passes it
    through as it is."""

    def __init__(self, loader: DataLoader, device: torch.device | None, non_blocking: bool = False):
        self.loader, self.device, self.non_blocking = loader, device, non_blocking

    @property
    def batch_sampler(self) -> MultigridBatchSampler | FixedShapeBatchSampler:
        return self.loader.batch_sampler

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        for batch in self.loader:
            yield batch if self.device is None else send_to_device(batch, self.device,
                                                                   non_blocking=self.non_blocking)


def prepare_loader(accelerator: Accelerator, loader: DataLoader) -> DeviceLoader:
    """What `accelerator.prepare` does for a DataLoader (device placement), without re-sharding its
    multigrid batch sampler; checks that the sampler was built for this process."""
    sampler = loader.batch_sampler
    if not isinstance(sampler, (MultigridBatchSampler, FixedShapeBatchSampler)):
        raise ConfigError("prepare_loader: the DataLoader's batch_sampler must be a MultigridBatchSampler or "
                          f"FixedShapeBatchSampler (got {type(sampler).__name__}); else accelerator.prepare")
    if (sampler.rank, sampler.world_size) != (accelerator.process_index, accelerator.num_processes):
        raise ConfigError(f"prepare_loader: the batch sampler is rank {sampler.rank} of "
                          f"{sampler.world_size}, this process is {accelerator.process_index} of "
                          f"{accelerator.num_processes}; build it with rank=accelerator.process_index, "
                          "world_size=accelerator.num_processes")
    if accelerator.gradient_accumulation_steps != 1:
        raise ConfigError(f"prepare_loader: gradient_accumulation_steps="
                          f"{accelerator.gradient_accumulation_steps} is not supported: each multigrid batch "
                          "is one optimizer step at its own shape and LR")
    device = accelerator.device if accelerator.device_placement else None
    return DeviceLoader(loader, device, bool(getattr(accelerator, "non_blocking", False)))
