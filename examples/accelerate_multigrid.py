"""Multigrid under Hugging Face Accelerate: a tiny video model on the CPU, tiny.yaml's recipe.

    python examples/accelerate_multigrid.py                                  # one process
    torchrun --nproc-per-node 2 examples/accelerate_multigrid.py             # 2 processes (gloo on the CPU)
    accelerate launch --num_processes 2 --cpu examples/accelerate_multigrid.py

Accelerate is told one thing: the train loader goes through `prepare_loader`, not `accelerator.prepare`, whose
re-sharding of the batch sampler would split the multigrid shapes between processes. The sampler is built
for this process (rank, world size), and the loop sets the LR and BN groups of every batch (`configure_step`).
"""

import argparse
import json
from collections import Counter
from pathlib import Path

import torch
from accelerate import Accelerator
from torch import nn
from torch.utils.data import DataLoader, Dataset

from mgvideo.integrations.accelerate import prepare_loader
from mgvideo.integrations.step import configure_step, iteration_counts
from mgvideo.multigrid import (
    LRConfig,
    MultigridBatchSampler,
    MultigridConfig,
    MultigridSchedule,
    convert_model,
)

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


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, help="log each step to DIR/rankN.jsonl")
    args = parser.parse_args(argv)

    accelerator = Accelerator(cpu=not torch.cuda.is_available())  # cpu=True: gloo across CPU processes
    sampler = MultigridBatchSampler(SCHEDULE, CLIPS, GLOBAL_BATCH // accelerator.num_processes,
                                    rank=accelerator.process_index, world_size=accelerator.num_processes)
    loader = prepare_loader(accelerator, DataLoader(RandomClips(), batch_sampler=sampler))
    torch.manual_seed(0)
    model = convert_model(nn.Sequential(  # BatchNorm3d becomes sub-batch BN
        nn.Conv3d(3, 8, 3, padding=1), nn.BatchNorm3d(8), nn.ReLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(8, CLASSES)))
    optimizer = torch.optim.SGD(model.parameters(), lr=LR.base_lr, momentum=0.9)
    model, optimizer = accelerator.prepare(model, optimizer)

    shapes = Counter()
    for epoch in range(SCHEDULE.max_epoch):
        sampler.set_epoch(epoch)
        for it, (clips, labels, indices) in enumerate(loader):
            configure_step(model, [optimizer], sampler, LR, it, len(clips), BN_BASE_SIZE)  # as mgvideo train
            loss = nn.functional.cross_entropy(model(clips), labels)
            optimizer.zero_grad()
            accelerator.backward(loss)
            optimizer.step()
            shapes[(len(clips), clips.shape[2], clips.shape[3])] += 1
            if args.trace:  # what this step trained on, for tests/test_integrations_accelerate.py
                bn = accelerator.unwrap_model(model)[1]
                record = {"epoch": epoch, "batch": len(clips), "frames": clips.shape[2],
                          "crop": clips.shape[3], "lr": optimizer.param_groups[0]["lr"],
                          "bn": [bn.groups, bn.sync_size], "indices": indices.tolist(), "loss": loss.item()}
                with open(args.trace / f"rank{accelerator.process_index}.jsonl", "a") as f:
                    f.write(json.dumps(record) + "\n")

    if accelerator.is_main_process:
        ran, baseline = iteration_counts(sampler)
        print("trained on (batch x T x S per device, iterations):",
              ", ".join(f"{b}x{t}x{s} ({n})" for (b, t, s), n in sorted(shapes.items())))
        print(f"{ran} iterations against the baseline's {baseline} ({baseline / ran:.2f}x fewer)")
    accelerator.end_training()


if __name__ == "__main__":
    main()
