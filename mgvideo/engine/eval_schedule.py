"""When a run evaluates: the steps after which it does, computed once when the run is built from the
batches its sampler will deal (multigrid/iterations.py) and the config's one evaluation cadence. The loop
checks `step in eval_steps`, so a resumed run evaluates at exactly the steps of an uninterrupted one."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from mgvideo.config import TrainConfig
from mgvideo.multigrid.schedule import MultigridSchedule


def eval_steps(train: TrainConfig, schedule: MultigridSchedule,
               epoch_clips: Sequence[Sequence[int]]) -> list[int]:
    """The steps (iterations finished in the whole run) after which to evaluate, sorted; `epoch_clips[e]`
    lists the clips, all devices together, of each iteration of epoch e (`RunLength.epoch_clips`).

    By the cadence the config sets (at most one): every `train.eval_period` epochs; each time the clips
    trained on pass a multiple of `train.eval_period_samples`; at the `train.eval_points` iterations
    ceil(k * total / N), k = 1..N, of the run's own schedule (a baseline and a multigrid run are evaluated
    equally often, whatever they cost per epoch); else the reference cadence (`schedule.eval_epochs`). The
    final model is always evaluated.
    """
    ends = list(itertools.accumulate(len(clips) for clips in epoch_clips))  # the step ending each epoch
    total = ends[-1] if ends else 0
    if train.eval_period:
        steps = {end for epoch, end in enumerate(ends) if (epoch + 1) % train.eval_period == 0}
    elif train.eval_period_samples:
        steps, period, seen = set(), train.eval_period_samples, 0
        for step, clips in enumerate(itertools.chain.from_iterable(epoch_clips), 1):
            if (seen + clips) // period > seen // period:
                steps.add(step)
            seen += clips
    elif train.eval_points:
        points = train.eval_points
        steps = {-(-k * total // points) for k in range(1, points + 1)}
    else:
        steps = {ends[epoch] for epoch in schedule.eval_epochs()}
    return sorted(steps | {total} if total else steps)
