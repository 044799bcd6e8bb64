"""The paper's random-shape ablation as a schedule: multigrid's long-cycle shapes and cost, in random order.

Pure Python (no torch), like schedule.py, whose validation and LR rule (steps or cosine) it reuses.
"""

from __future__ import annotations

import random

from mgvideo.errors import ScheduleError
from mgvideo.multigrid.schedule import MultigridConfig, MultigridSchedule, Stage


class RandomShapeSchedule(MultigridSchedule):
    """The ordered long cycle's shapes, each epoch drawn at random instead of going coarse to fine.

    Within each LR step an epoch's shape is drawn with probability proportional to the epochs the ordered
    schedule gives it, so the expected cost and the batch-scaled LR (B·T·S² constant) match multigrid's.
    The fine-tuning stage stays last and unchanged. Every epoch is one stage, and the LR follows the
    config's policy over those stages exactly as for the ordered schedule. The same seed gives the same
    schedule.
    """

    def __init__(self, cfg: MultigridConfig, seed: int) -> None:
        super().__init__(cfg)  # validates the config and builds the ordered schedule
        if not cfg.long_cycle:
            raise ScheduleError("long_cycle: random shapes reorder the long cycle's stages; it must be on "
                                "(got False)")
        self.seed = seed
        self._set_stages(_shuffled_stages(self.stages, random.Random(seed)))


def _shuffled_stages(ordered: tuple[Stage, ...], rng: random.Random) -> list[Stage]:
    """One-epoch stages drawn per LR step from that step's shapes (weighted by epochs), then fine-tuning."""
    stages: list[Stage] = []
    for step in sorted({s.lr_step for s in ordered if not s.finetune}):
        pool = [s for s in ordered if s.lr_step == step and not s.finetune and s.epochs > 0]
        if not pool:
            continue
        for epoch in range(pool[0].start_epoch, pool[-1].end_epoch):
            drawn = rng.choices(pool, weights=[s.epochs for s in pool])[0]
            stages.append(Stage(len(stages), step, drawn.batch_factor, drawn.frames, drawn.crop, epoch,
                                epoch + 1, drawn.slots))
    last = ordered[-1]
    stages.append(Stage(len(stages), last.lr_step, last.batch_factor, last.frames, last.crop,
                        last.start_epoch, last.end_epoch, last.slots, finetune=True))
    return stages
