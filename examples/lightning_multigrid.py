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
from torch.utils.data import DataLoader, Dataset

from mgvideo.integrations.lightning import MultigridCallback
from mgvideo.integrations.step import iteration_counts
from mgvideo.multigrid import LRConfig, MultigridConfig, MultigridSchedule, convert_model

SCHEDULE = MultigridSchedule(MultigridConfig(frames=8, crop=32, steps=(0, 4), max_epoch=5, sampling_rate=2))
LR = LRConfig(base_lr=0.05, warmup_epochs=0.5, warmup_start_lr=0.01)
CLIPS, GLOBAL_BATCH, BN_BASE_SIZE, CLASSES = 40, 2, 2, 4


class RandomClips(Dataset):
    """Stands in for a video dataset: the clip that `shape` asks for (noise seeded by the index)."""

    def __len__(self):
        return CLIPS

    def __getitem__(self, item):
        index, shape = item
        noise = torch.Generator().manual_seed(index)
        return torch.randn(3, shape.frames, shape.crop, shape.crop, generator=noise), index % CLASSES, index


class TinyVideoNet(L.LightningModule):
    def __init__(self, multigrid: MultigridCallback, trace: Path | None, workers: int = 0):
        super().__init__()
        torch.manual_seed(0)
        self.net = convert_model(nn.Sequential(  # BatchNorm3d becomes sub-batch BN
            nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
            nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, CLASSES)))
        self.multigrid, self.trace, self.workers, self.shapes = multigrid, trace, workers, Counter()

    def train_dataloader(self):
        return DataLoader(RandomClips(), batch_sampler=self.multigrid.batch_sampler, num_workers=self.workers,
                          persistent_workers=self.workers > 0)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=LR.base_lr, momentum=0.9)  # the callback sets the LR

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

    multigrid = MultigridCallback(SCHEDULE, LR, dataset_size=CLIPS, batch_size=GLOBAL_BATCH // args.devices,
                                  bn_base_size=BN_BASE_SIZE)
    saving = [ModelCheckpoint(args.checkpoints, every_n_train_steps=args.save_every or None, save_last=True)
              ] if args.checkpoints else []
    trainer = L.Trainer(
        accelerator="cpu", devices=args.devices, strategy="ddp" if args.devices > 1 else "auto",
        max_epochs=SCHEDULE.max_epoch, use_distributed_sampler=False,
        callbacks=[multigrid, *saving, *callbacks], enable_checkpointing=bool(saving),
        logger=False, enable_progress_bar=False, enable_model_summary=False)
    model = TinyVideoNet(multigrid, args.trace, args.workers)
    trainer.fit(model, ckpt_path=args.resume, weights_only=True)

    if trainer.is_global_zero:
        ran, baseline = iteration_counts(multigrid.sampler)
        shapes = ", ".join(f"{b}x{t}x{s} ({n})" for (b, t, s), n in sorted(model.shapes.items()))
        print(f"trained on (batch x T x S per device, iterations): {shapes}")
        print(f"{ran} iterations against the baseline's {baseline} ({baseline / ran:.2f}x fewer)")


if __name__ == "__main__":
    main()
