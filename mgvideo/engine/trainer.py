"""The training loop. `train` reads top to bottom: build once, then for each epoch train, refresh BN
statistics at stage ends, evaluate, checkpoint. Shapes change through the batch sampler alone; nothing is
rebuilt at a stage change. The plumbing lives in engine/run.py and engine/builders.py.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from mgvideo.config import Config, override
from mgvideo.data.loader import Batch
from mgvideo.engine import builders, checkpoint
from mgvideo.engine import distributed as D
from mgvideo.engine.evaluate import collect_scores, precise_bn, summarize
from mgvideo.engine.plots import plot_run
from mgvideo.engine.run import Run, build_run, crash_hook, plan_batches, save_state
from mgvideo.errors import MgvideoError
from mgvideo.multigrid.batchnorm import bn_groups_for, set_bn_groups
from mgvideo.multigrid.lr import lr_at, set_lr
from mgvideo.multigrid.sampler import iterations_per_epoch
from mgvideo.multigrid.schedule import ClipShape, MultigridSchedule, Stage


class NonFiniteLossError(MgvideoError, FloatingPointError):
    """The loss became NaN or infinite; the message names the iteration and the clip shape."""


def train(cfg: Config, out_dir: str | Path, force: bool = False,
          schedule: MultigridSchedule | None = None) -> dict[str, Any]:
    """Train (or resume) the run in `out_dir`; returns the summary also written to `summary.json`.

    `schedule` replaces the one the config describes (the benchmark's random-shape ablation).
    """
    run = build_run(cfg, Path(out_dir), force, schedule)
    state = run.state
    state.next_eval = state.next_eval or cfg.train.eval_period_samples
    try:
        for epoch in range(state.epoch, run.schedule.max_epoch):
            train_epoch(run, epoch)
            state.epoch, state.iteration = epoch + 1, 0
            end_epoch(run, epoch)
            save_state(run)
        return finish(run)
    finally:
        run.log.close()
        D.shutdown(run.info)


def end_epoch(run: Run, epoch: int) -> None:
    """Evaluate if due; at a stage end, BN statistics at the stage's shape (unless an evaluation just
    refreshed them at the full shape) and the stage checkpoint."""
    stage = run.schedule.stage_at(epoch)
    stage_end = stage.end_epoch == epoch + 1
    if eval_due(run, epoch):
        evaluate(run, epoch)  # its precise BN at the eval shape supersedes the stage-end one
    elif stage_end:
        started = time.perf_counter()
        refresh_bn(run, *stage_shape(run, stage), epoch)
        run.log.write({"kind": "precise_bn", "step": run.state.step, "epoch": epoch + 1, "stage": stage.index,
                       "time": run.clock(), "seconds": round(time.perf_counter() - started, 3)})
    if stage_end:
        save_state(run, f"stage_{stage.index:02d}.pt")


def eval_due(run: Run, epoch: int) -> bool:
    """At the end of `epoch`: the reference cadence, or a periodic evaluation point passed in the last
    iteration, or the end of training when the final model has not been evaluated yet."""
    if epoch + 1 == run.schedule.max_epoch:
        return run.state.eval_step != run.state.step
    if run.cfg.train.eval_period_samples == 0 and run.cfg.train.eval_points == 0:
        return run.schedule.is_eval_epoch(epoch)
    return periodic_eval_due(run)


def periodic_eval_due(run: Run) -> bool:
    """Whether training has passed the next `train.eval_period_samples` or `train.eval_points` point."""
    by_samples = bool(run.cfg.train.eval_period_samples) and run.state.samples >= run.state.next_eval
    return by_samples or eval_point_passed(run)


def eval_point_passed(run: Run) -> bool:
    """With `train.eval_points` = N: whether an iteration ceil(k * total / N) (k = 1..N) lies after the
    last evaluation and at or before this step. Spaced by iterations of the run's own schedule, so a
    baseline and a multigrid run are evaluated equally often, whatever they cost per epoch."""
    points = run.cfg.train.eval_points
    if not points:
        return False
    total = max(run.log.total_iterations, 1)
    last = max(run.state.eval_step, 0)
    return run.state.step * points // total > last * points // total
def train_epoch(run: Run, epoch: int) -> None:
    """One pass over the training set, at the shapes and batch sizes the sampler picks per iteration."""
    state = run.state
    run.sampler.set_epoch(epoch)
    run.train_set.set_epoch(epoch)
    iterations = len(run.sampler)
    run.model.train()
    waited = time.perf_counter()
    for batch in run.loader:
        started = time.perf_counter()
        lr = lr_at(epoch + state.iteration / iterations, run.schedule, run.lr_cfg)
        set_lr(run.optimizer, lr)
        loss, skipped = train_step(run, batch, epoch)
        state.iteration, state.step = state.iteration + 1, state.step + 1
        state.samples += len(batch) * run.info.world_size
        state.skipped += skipped
        log_iteration(run, batch, epoch + state.iteration / iterations, loss, lr, waited, started)
        # A point reached by the epoch's last batch is left to end_epoch, which then skips the
        # stage-end precise BN.
        if state.iteration < iterations and periodic_eval_due(run):
            evaluate(run, epoch)
        if checkpoint_due(run):
            save_state(run)
        crash_hook(run)
        waited = time.perf_counter()


def train_step(run: Run, batch: Batch, epoch: int) -> tuple[float, int]:
    """Forward, loss, backward and SGD step on one batch; returns the mean loss over all devices and the
    number of bad videos skipped to fill the batch."""
    x = run.inputs(batch)
    stage_batch = run.batch * run.sampler.stage.batch_factor
    set_bn_groups(run.net, bn_groups_for(len(batch), stage_batch, run.cfg.model.bn_base_size,
                                         run.info.world_size))
    # Dropout draws depend only on (seed, step, rank), so a resumed run makes the same draws.
    torch.manual_seed((run.cfg.train.seed * 1_000_003 + run.state.step) * 1031 + run.info.rank)
    with torch.autocast(run.device.type, dtype=run.amp_dtype, enabled=run.amp_dtype is not None):
        logits = run.model(x.clips)
    loss = run.loss_fn(logits.float(), x.labels)
    total, count, skipped = D.all_reduce_sum([loss.item() * len(batch), len(batch), batch.skipped],
                                             run.device, run.info)
    mean = total / count
    if not math.isfinite(mean):
        _, _, frames, crop, _ = x.clips.shape
        raise NonFiniteLossError(
            f"non-finite loss ({mean}) at epoch {epoch}, iteration {run.state.iteration} "
            f"(step {run.state.step}), clip shape {frames}x{crop}x{crop}, batch {len(batch)}; stopping. "
            f"The last good checkpoint is {run.out_dir / 'checkpoints' / 'last.pt'}"
        )
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.cfg.solver.clip_grad_norm > 0:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.net.parameters(), run.cfg.solver.clip_grad_norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    return mean, int(skipped)


def refresh_bn(run: Run, batch: int, shape: ClipShape, epoch: int) -> None:
    """Precise BN: exact BN statistics over training batches at `shape` (spec §4)."""
    num = plan_batches(run, shape, batch, precise_bn_batches(run.cfg, batch, run.info.world_size), epoch)
    if num == 0:
        return
    set_bn_groups(run.net, bn_groups_for(batch, shape.stage_batch, run.cfg.model.bn_base_size,
                                         run.info.world_size))
    precise_bn(run.net, run.precise_loader, run.inputs, num, run.info)


def precise_bn_batches(cfg: Config, batch: int, world_size: int) -> int:
    """How many per-device batches of `batch` clips precise BN uses: `train.precise_bn_batches`, capped
    by `train.precise_bn_clips` (all devices together) when that is set."""
    t = cfg.train
    if t.precise_bn_clips == 0:
        return t.precise_bn_batches
    return min(t.precise_bn_batches, math.ceil(t.precise_bn_clips / (batch * world_size)))


def evaluate(run: Run, epoch: int) -> dict[str, float]:
    """Validation at the full shape, after precise BN at that shape so the statistics match it. The
    run's training clock is paused throughout: evaluation is not training time."""
    full = builders.eval_shape(run.cfg, run.batch)
    with run.clock.paused():
        started = time.perf_counter()
        refresh_bn(run, run.batch, full, epoch)
        refreshed = time.perf_counter()
        scores, labels, videos = collect_scores(run.net, run.val_loader, run.inputs, run.info)
        result = summarize(scores, labels, run.cfg.multi_label)
        if run.state.step == run.log.total_iterations and not run.cfg.multi_label:
            save_val_hits(run, scores, labels, videos)
        mark_evaluated(run, result)
        state = run.state
        run.log.write({"kind": "eval", "step": state.step,
                       "epoch": epoch + 1 if state.iteration == 0 else epoch, "samples": state.samples,
                       "time": run.clock(), "wall": run.clock.wall(), **result,
                       "bn_s": round(refreshed - started, 3),
                       "val_s": round(time.perf_counter() - refreshed, 3)})
    metric = f"mAP {result['mAP']:.2f}" if "mAP" in result else f"top-1 {result['top1']:.2f}"
    run.log.message(f"eval after step {state.step} ({run.clock() / 60:.1f} min of training): {metric}")
    return result


def save_val_hits(run: Run, scores: torch.Tensor, labels: torch.Tensor, videos: torch.Tensor) -> None:
    """The final model's top-1 hit (0/1) per validation video, in video order (`val_hits.json`): what the
    benchmark bootstraps its intervals from."""
    if run.info.is_main:
        hits = (scores.argmax(1) == labels).int()[videos.argsort()]
        (run.out_dir / "val_hits.json").write_text(json.dumps(hits.tolist()))


def mark_evaluated(run: Run, result: dict[str, float]) -> None:
    """Record an evaluation at this step and move the next periodic point past the samples seen."""
    state, period = run.state, run.cfg.train.eval_period_samples
    state.last_eval, state.eval_step = result, state.step
    while period and state.next_eval <= state.samples:
        state.next_eval += period


def stage_shape(run: Run, stage: Stage) -> tuple[int, ClipShape]:
    """The long-cycle shape of a stage (its last short-cycle slot) and its per-device batch."""
    return run.schedule.shapes(stage, run.batch)[-1]


def checkpoint_due(run: Run) -> bool:
    """Every `checkpoint_every_iters` steps, or every `checkpoint_minutes` (rank 0's clock decides)."""
    t = run.cfg.train
    if t.checkpoint_every_iters and run.state.step % t.checkpoint_every_iters == 0:
        return True
    late = t.checkpoint_minutes > 0 and run.clock() - run.last_save >= 60 * t.checkpoint_minutes
    return D.broadcast_flag(late, run.device, run.info)


def log_iteration(run: Run, batch: Batch, epoch: float, loss: float, lr: float, waited: float,
                  started: float) -> None:
    """One metrics record and a progress-bar tick; `waited` is when the loop began waiting for this
    batch and `started` when it arrived."""
    seconds = max(time.perf_counter() - waited, 1e-9)
    data_wait = started - waited
    clips = len(batch) * run.info.world_size
    _, _, frames, crop, _ = batch.clips.shape
    stage = run.sampler.stage.index
    run.log.write({
        "kind": "train", "step": run.state.step, "epoch": round(epoch, 5), "stage": stage,
        "frames": frames, "crop": crop, "batch": clips, "loss": loss, "lr": lr,
        "clips_per_s": round(clips / seconds, 2), "data_wait": round(data_wait / seconds, 4),
        "time": round(run.clock(), 3),
    })
    run.log.progress(stage, f"{frames}x{crop}", clips / seconds)


def finish(run: Run) -> dict[str, Any]:
    """Final weights (`model_final.pt`, a plain state dict), `summary.json` and the plots."""
    state = run.state
    summary = {
        "val": state.last_eval, "wall_clock_s": round(run.clock(), 1), "iterations": state.step,
        "epochs": run.schedule.max_epoch, "samples": state.samples, "skipped_videos": state.skipped,
        "baseline_iterations": baseline_iterations(run.cfg, len(run.train_set), run.info.world_size),
        "schedule_iteration_saving": round(run.schedule.speedup(), 3),
    }
    summary["iteration_saving"] = round(summary["baseline_iterations"] / max(state.step, 1), 3)
    if run.info.is_main:
        checkpoint.save(run.net.state_dict(), run.out_dir / "model_final.pt")
        (run.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        plot_run(run.out_dir)
        if state.skipped:
            run.log.message(f"skipped {state.skipped} unreadable videos in total")
    D.barrier(run.info)
    return summary


def baseline_iterations(cfg: Config, dataset_size: int, world_size: int) -> int:
    """Iterations the baseline schedule (no long or short cycle) would take on the same data."""
    base = override(cfg, **{"multigrid.long_cycle": False, "multigrid.short_cycle": False})
    schedule = builders.build_schedule(base)
    batch = builders.per_device_batch(base, world_size)
    return schedule.max_epoch * iterations_per_epoch(dataset_size, batch, world_size)
