"""Multigrid inside PyTorch Lightning: a tiny video model on the CPU, configs/synthetic/tiny.yaml's recipe.

    python examples/lightning_multigrid.py               # one process
    python examples/lightning_multigrid.py --devices 2   # Lightning's DDP, 2 CPU processes (gloo)

Lightning is told three things: `use_distributed_sampler=False` (the multigrid sampler shards by rank
itself), `max_epochs` = the schedule's, and the train DataLoader takes `multigrid.batch_sampler`.
MultigridCallback sets the LR and the BN groups of every batch, and refuses, in one line, Trainer flags that
would break that.
"""

import argparse
import json
from collections import Counter
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader

from mgvideo.integrations import tiny
from mgvideo.integrations.lightning import MultigridCallback


class TinyVideoNet(L.LightningModule):
    def __init__(self, multigrid: MultigridCallback, trace: Path | None, workers: int = 0):
        super().__init__()
        self.net = tiny.tiny_net()
        self.multigrid, self.trace, self.workers, self.shapes = multigrid, trace, workers, Counter()

    def train_dataloader(self):
        return DataLoader(tiny.RandomClips(), batch_sampler=self.multigrid.batch_sampler,
                          num_workers=self.workers, persistent_workers=self.workers > 0)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=tiny.LR.base_lr, momentum=0.9)  # the callback sets LRs

    def training_step(self, batch, batch_idx):
        clips, labels, indices = batch
        loss = nn.functional.cross_entropy(self.net(clips), labels)
        self.shapes[tuple(clips.shape[:1] + clips.shape[2:4])] += 1  # (batch, T, S)
        if self.trace:  # what this step trained on, for tests/test_integrations_lightning.py
            record = {"epoch": self.current_epoch, "batch": len(clips), "frames": clips.shape[2],
                      "crop": clips.shape[3], "lr": self.optimizers().param_groups[0]["lr"],
                      "bn": [self.net[1].groups, self.net[1].sync_size], "indices": indices.tolist(),
                      "loss": loss.item()}
            with open(self.trace / f"rank{self.global_rank}.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")
        return loss


def main(argv=None, callbacks=()):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    parser.add_argument("--checkpoints", type=Path, help="save Lightning checkpoints (last.ckpt) here")
    parser.add_argument("--save-every", type=int, default=1, help="steps between checkpoints (0: epoch ends)")
    parser.add_argument("--resume", type=Path, help="a Lightning checkpoint to resume from")
    parser.add_argument("--trace", type=Path, help="log each step to DIR/rankN.jsonl")
    args = parser.parse_args(argv)

    per_device = tiny.GLOBAL_BATCH // args.devices
    multigrid = MultigridCallback(tiny.SCHEDULE, tiny.LR, dataset_size=tiny.CLIPS, batch_size=per_device,
                                  bn_base_size=tiny.BN_BASE_SIZE)
    saving = [ModelCheckpoint(args.checkpoints, every_n_train_steps=args.save_every or None, save_last=True)
              ] if args.checkpoints else []
    trainer = L.Trainer(
        accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
        max_epochs=tiny.SCHEDULE.max_epoch, use_distributed_sampler=False,
        callbacks=[multigrid, *saving, *callbacks], enable_checkpointing=bool(saving),
        logger=False, enable_progress_bar=False, enable_model_summary=False)
    model = TinyVideoNet(multigrid, args.trace, args.workers)
    trainer.fit(model, ckpt_path=args.resume, weights_only=True)

    if trainer.is_global_zero:
        tiny.print_summary(multigrid.sampler, model.shapes)


if __name__ == "__main__":
    main()
