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
from torch.utils.data import DataLoader

from mgvideo.integrations import tiny
from mgvideo.integrations.accelerate import prepare_loader
from mgvideo.integrations.step import configure_step
from mgvideo.multigrid import MultigridBatchSampler


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, help="log each step to DIR/rankN.jsonl")
    args = parser.parse_args(argv)

    accelerator = Accelerator(cpu=not torch.cuda.is_available())  # cpu=True: gloo across CPU processes
    per_device = tiny.GLOBAL_BATCH // accelerator.num_processes
    sampler = MultigridBatchSampler(tiny.SCHEDULE, tiny.CLIPS, per_device, rank=accelerator.process_index,
                                    world_size=accelerator.num_processes)
    loader = prepare_loader(accelerator, DataLoader(tiny.RandomClips(), batch_sampler=sampler))
    model = tiny.tiny_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=tiny.LR.base_lr, momentum=0.9)
    model, optimizer = accelerator.prepare(model, optimizer)

    shapes = Counter()
    for epoch in range(tiny.SCHEDULE.max_epoch):
        sampler.set_epoch(epoch)
        for it, (clips, labels, indices) in enumerate(loader):
            # as mgvideo train does: this iteration's LR and BN groups
            configure_step(model, [optimizer], sampler, tiny.LR, it, len(clips), tiny.BN_BASE_SIZE)
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
        tiny.print_summary(sampler, shapes)
    accelerator.end_training()


if __name__ == "__main__":
    main()
