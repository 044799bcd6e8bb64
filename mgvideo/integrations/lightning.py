"""Multigrid in PyTorch Lightning: one callback owns the batch sampler and sets each batch's LR and BN groups.

    multigrid = MultigridCallback(schedule, lr_config, dataset_size=len(dataset), batch_size=8)
    trainer = L.Trainer(max_epochs=schedule.max_epoch, use_distributed_sampler=False, callbacks=[multigrid])
    # in the LightningModule or the DataModule:
    def train_dataloader(self):
        return DataLoader(dataset, batch_sampler=multigrid.batch_sampler)

The callback builds the `MultigridBatchSampler` in `setup`, where Lightning knows the rank and the world size
under every strategy. Before each batch it makes the trainer's calls (`integrations.step.configure_step`);
after each epoch it moves the sampler on (Lightning's own `set_epoch` does not reach a batch sampler). Its
state, the sampler's position, goes into Lightning's checkpoints, so `trainer.fit(..., ckpt_path=...)`
continues with the very same batches. Trainer flags that would change the batches or the LR are refused in
one line.

The DataLoader gets the sampler without a length: Lightning fixes the length of every epoch at the first
one's, and multigrid epochs differ. Without one it runs each epoch until the sampler ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.data import extract_batch_size

from mgvideo.errors import ConfigError
from mgvideo.integrations.step import configure_step
from mgvideo.multigrid.lr import LRConfig
from mgvideo.multigrid.sampler import DealtBatch, MultigridBatchSampler
from mgvideo.multigrid.schedule import MultigridSchedule

NAME = "MultigridCallback"


class EpochBatches:
    """The sampler's batches of the current epoch, with no `__len__` (see the module docstring)."""

    def __init__(self, sampler: MultigridBatchSampler):
        self._multigrid = sampler  # not `.sampler`: Lightning would call its set_epoch with its own count

    def __iter__(self) -> Iterator[DealtBatch]:
        return iter(self._multigrid)


class MultigridCallback(pl.Callback):
    """Multigrid training under a Lightning Trainer: the schedule's shapes (through `batch_sampler`), its LR
    and its BN groups, exactly as `mgvideo train` sets them.

    `batch_size` is the long-cycle base batch of one device (as `MultigridBatchSampler`'s), `seed` the
    sampler's shuffling seed. For the BN groups to apply, the model's BatchNorm3d layers must have been
    converted with `mgvideo.multigrid.convert_model` (a model without BN is fine).
    """

    def __init__(self, schedule: MultigridSchedule, lr_config: LRConfig, *, dataset_size: int,
                 batch_size: int, bn_base_size: int = 8, seed: int = 0, drop_last: bool = True):
        self.schedule, self.lr_config, self.bn_base_size = schedule, lr_config, bn_base_size
        self.dataset_size, self.batch_size, self.seed = dataset_size, batch_size, seed
        self.drop_last = drop_last
        self._sampler: MultigridBatchSampler | None = None
        self._batches: EpochBatches | None = None
        self._pending: dict | None = None  # sampler state loaded before the sampler was built
        self.iteration = 0  # batches finished in the current epoch (the sampler's own position runs ahead)

    @property
    def sampler(self) -> MultigridBatchSampler:
        """The multigrid batch sampler of this process (built in `setup`)."""
        if self._sampler is None:
            raise ConfigError(f"{NAME}: the sampler is built in the Trainer's setup; create the train "
                              "DataLoader in train_dataloader() of the LightningModule or DataModule")
        return self._sampler

    @property
    def batch_sampler(self) -> EpochBatches:
        """What the train DataLoader takes: `DataLoader(dataset, batch_sampler=multigrid.batch_sampler)`."""
        if self._batches is None or self._batches._multigrid is not self.sampler:
            self._batches = EpochBatches(self.sampler)
        return self._batches

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        check_trainer(trainer, self.schedule)
        self._sampler = MultigridBatchSampler(self.schedule, self.dataset_size, self.batch_size,
                                              rank=trainer.global_rank, world_size=trainer.world_size,
                                              seed=self.seed, drop_last=self.drop_last)
        self.iteration = 0
        if self._pending is not None:
            self._restore(self._pending)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.lr_scheduler_configs:
            raise ConfigError(f"{NAME}: configure_optimizers returned an LR scheduler; the callback sets the "
                              "LR of every step from the schedule (LRConfig), so return the optimizer alone")
        check_loader(trainer, self.batch_sampler)

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.current_epoch != self.sampler.epoch:
            raise ConfigError(f"{NAME}: Lightning starts epoch {trainer.current_epoch} but the multigrid "
                              f"sampler is at epoch {self.sampler.epoch}; was the checkpoint written with "
                              "this callback?")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Here rather than at the next epoch's start, which Lightning skips when it resumes there.
        self.sampler.set_epoch(trainer.current_epoch + 1)
        self.iteration = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        configure_step(pl_module, trainer.optimizers, self.sampler, self.lr_config, self.iteration,
                       extract_batch_size(batch), self.bn_base_size, shape=getattr(batch, "shape", None))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.iteration += 1

    def state_dict(self) -> dict[str, Any]:
        if self._sampler is None:
            return {} if self._pending is None else {"sampler": self._pending}
        return {"sampler": self._sampler.state_dict(consumed=self.iteration)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "sampler" in state_dict:
            self._pending = dict(state_dict["sampler"])
            if self._sampler is not None:
                self._restore(self._pending)

    def _restore(self, state: dict) -> None:
        """Put the sampler where the checkpoint left it; a finished epoch becomes the next one's start, where
        Lightning resumes (and a loader with workers draws batches before any epoch hook runs)."""
        self.sampler.load_state_dict(state)
        position = int(state["position"])
        if position == len(self.sampler):
            self.sampler.set_epoch(self.sampler.epoch + 1)
            position = 0
        self.iteration, self._pending = position, None


def check_trainer(trainer: pl.Trainer, schedule: MultigridSchedule) -> None:
    """Refuse, in one line, Trainer settings under which the batches or the LR would not be the schedule's."""
    # The flag has no public accessor; should it move, check_loader still catches a replaced sampler.
    if getattr(trainer._accelerator_connector, "use_distributed_sampler", False):
        raise ConfigError(f"{NAME}: pass Trainer(use_distributed_sampler=False); the multigrid batch sampler "
                          "shards the data by rank itself, and Lightning would try to replace it")
    if trainer.accumulate_grad_batches != 1:
        raise ConfigError(f"{NAME}: Trainer(accumulate_grad_batches={trainer.accumulate_grad_batches}) is "
                          "not supported: each multigrid batch is one optimizer step at its own shape and "
                          "LR; choose the per-device batch_size instead")
    if trainer.max_epochs != schedule.max_epoch or trainer.max_steps != -1:
        raise ConfigError(f"{NAME}: pass Trainer(max_epochs={schedule.max_epoch}) (the schedule's "
                          f"max_epoch) and no max_steps; got max_epochs={trainer.max_epochs}, "
                          f"max_steps={trainer.max_steps}")
    if trainer.limit_train_batches != 1.0 or trainer.overfit_batches:
        raise ConfigError(f"{NAME}: leave limit_train_batches and overfit_batches at their defaults (got "
                          f"{trainer.limit_train_batches}, {trainer.overfit_batches}); they cut the "
                          "schedule's epochs")


def check_loader(trainer: pl.Trainer, batches: EpochBatches) -> None:
    """The one train DataLoader must draw its batches from the callback, unwrapped."""
    loader = trainer.train_dataloader
    if getattr(loader, "batch_sampler", None) is not batches:
        found = type(getattr(loader, "batch_sampler", loader)).__name__
        raise ConfigError(f"{NAME}: the train DataLoader must be one DataLoader(dataset, batch_sampler="
                          f"multigrid.batch_sampler), not re-wrapped (its batch sampler is a {found})")
