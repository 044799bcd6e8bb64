"""Multigrid in PyTorch Lightning: one callback owns the batch sampler, and sets the LR and BN groups.

    multigrid = MultigridCallback(schedule, lr_config, dataset_size=len(dataset), batch_size=8)
    trainer = L.Trainer(max_epochs=schedule.max_epoch, use_distributed_sampler=False, callbacks=[multigrid])
    # in the LightningModule or DataModule:
    def train_dataloader(self):
        return DataLoader(dataset, batch_sampler=multigrid.sampler)

The callback builds the `MultigridBatchSampler` in `setup`, where Lightning knows the rank and the world size
under every strategy (ddp, ddp_spawn, multi-node). Before each batch it makes the trainer's calls
(`integrations.step.configure_step`); at each epoch start it selects the sampler's epoch (Lightning's own
`set_epoch` call does not reach a batch sampler). Its state (the sampler's position) goes into Lightning's
checkpoints, so a run resumed with `trainer.fit(..., ckpt_path=...)` continues with the very same batches.
Trainer settings that would change the batches or fight the schedule are refused in one line.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.utilities.data import extract_batch_size

from mgvideo.errors import ConfigError
from mgvideo.integrations.step import configure_step
from mgvideo.multigrid.lr import LRConfig
from mgvideo.multigrid.sampler import MultigridBatchSampler
from mgvideo.multigrid.schedule import MultigridSchedule

NAME = "MultigridCallback"


class MultigridCallback(pl.Callback):
    """Multigrid training under a Lightning Trainer: the schedule's shapes (through `sampler`), its LR and
    its BN groups, exactly as `mgvideo train` sets them.

    `batch_size` is the long-cycle base batch of one device (as `MultigridBatchSampler`'s); `seed` the
    sampler's shuffling seed. The model's BatchNorm3d layers must have been converted with
    `mgvideo.multigrid.convert_model` for the BN groups to apply (a model without BN is fine).
    """

    def __init__(self, schedule: MultigridSchedule, lr_config: LRConfig, *, dataset_size: int, batch_size: int,
                 bn_base_size: int = 8, seed: int = 0, drop_last: bool = True):
        self.schedule, self.lr_config, self.bn_base_size = schedule, lr_config, bn_base_size
        self.dataset_size, self.batch_size, self.seed, self.drop_last = dataset_size, batch_size, seed, drop_last
        self._sampler: MultigridBatchSampler | None = None
        self._pending: dict | None = None  # sampler state from a checkpoint, restored before the sampler exists
        self.iteration = 0  # batches finished in the current epoch (the sampler's own position runs ahead)

    @property
    def sampler(self) -> MultigridBatchSampler:
        """The batch sampler to give the train DataLoader (`DataLoader(dataset, batch_sampler=...)`)."""
        if self._sampler is None:
            raise ConfigError(f"{NAME}.sampler: not built yet; create the train DataLoader in "
                              "train_dataloader() (of the LightningModule or DataModule), after the Trainer's setup")
        return self._sampler

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        check_trainer(trainer, self.schedule)
        if self._sampler is None or (self._sampler.rank, self._sampler.world_size) != (trainer.global_rank,
                                                                                       trainer.world_size):
            self._sampler = MultigridBatchSampler(
                self.schedule, self.dataset_size, self.batch_size, rank=trainer.global_rank,
                world_size=trainer.world_size, seed=self.seed, drop_last=self.drop_last)
        if self._pending is not None:
            self._restore(self._pending)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.lr_scheduler_configs:
            raise ConfigError(f"{NAME}: configure_optimizers returned an LR scheduler; the callback sets the LR "
                              "of every step from the schedule (LRConfig), so return the optimizer alone")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        check_loader(trainer, self.sampler)
        if trainer.current_epoch != self.sampler.epoch:
            raise ConfigError(f"{NAME}: Lightning starts epoch {trainer.current_epoch} but the multigrid sampler "
                              f"is at epoch {self.sampler.epoch}; was the checkpoint written by this callback?")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Now, not at the next epoch's start: Lightning reads the next epoch's length (reloading the loader)
        # before its epoch-start hooks run.
        self.sampler.set_epoch(trainer.current_epoch + 1)
        self.iteration = 0

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        configure_step(pl_module, trainer.optimizers, self.sampler, self.lr_config, self.iteration,
                       extract_batch_size(batch), self.bn_base_size)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.iteration += 1

    def state_dict(self) -> dict[str, Any]:
        if self._sampler is None:
            return {} if self._pending is None else {"sampler": self._pending}
        return {"sampler": self._sampler.state_dict(consumed=self.iteration)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if "sampler" not in state_dict:
            return
        self._pending = dict(state_dict["sampler"])
        if self._sampler is not None:
            self._restore(self._pending)

    def _restore(self, state: dict) -> None:
        """Put the sampler where the checkpoint left it. A finished epoch becomes the next one's start:
        Lightning resumes there, and a loader with workers draws batches before the epoch-start hook."""
        self.sampler.load_state_dict(state)
        position = int(state["position"])
        if position == len(self.sampler):
            self.sampler.set_epoch(self.sampler.epoch + 1)
            position = 0
        self.iteration = position
        self._pending = None


def check_trainer(trainer: pl.Trainer, schedule: MultigridSchedule) -> None:
    """Refuse, in one line, Trainer settings under which the batches or the LR would not be the schedule's."""
    if getattr(trainer._accelerator_connector, "use_distributed_sampler", False):
        raise ConfigError(f"{NAME}: pass Trainer(use_distributed_sampler=False); the multigrid batch sampler "
                          "shards the data by rank itself, and Lightning would try to replace it")
    if trainer.accumulate_grad_batches != 1:
        raise ConfigError(f"{NAME}: Trainer(accumulate_grad_batches={trainer.accumulate_grad_batches}) is not "
                          "supported: each multigrid batch is one optimizer step at its own shape and LR; "
                          "choose the per-device batch_size instead")
    if trainer.max_epochs != schedule.max_epoch or trainer.max_steps != -1:
        raise ConfigError(f"{NAME}: pass Trainer(max_epochs={schedule.max_epoch}) (the schedule's max_epoch) "
                          f"and no max_steps; got max_epochs={trainer.max_epochs}, max_steps={trainer.max_steps}")
    if trainer.reload_dataloaders_every_n_epochs != 1:
        raise ConfigError(f"{NAME}: pass Trainer(reload_dataloaders_every_n_epochs=1); multigrid epochs differ "
                          "in length and Lightning reads an epoch's length only when it loads the train loader "
                          "(train_dataloader() may return the same DataLoader every time)")
    if trainer.limit_train_batches != 1.0 or trainer.overfit_batches:
        raise ConfigError(f"{NAME}: limit_train_batches and overfit_batches must stay at their defaults (got "
                          f"{trainer.limit_train_batches}, {trainer.overfit_batches}); they cut the schedule's epochs")


def check_loader(trainer: pl.Trainer, sampler: MultigridBatchSampler) -> None:
    """The train DataLoader must draw its batches from the callback's sampler, unwrapped."""
    loader = trainer.train_dataloader
    if getattr(loader, "batch_sampler", None) is not sampler:
        raise ConfigError(f"{NAME}: the train DataLoader must be DataLoader(dataset, batch_sampler="
                          f"multigrid.sampler), one loader, not re-wrapped (its batch sampler is "
                          f"{type(getattr(loader, 'batch_sampler', loader)).__name__})")
