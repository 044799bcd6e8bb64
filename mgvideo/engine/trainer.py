"""The training loop. `train` reads top to bottom: build once, then for each epoch train, evaluate at the
run's evaluation steps, refresh BN statistics at stage ends, checkpoint. Shapes change through the batch
sampler alone; nothing is rebuilt at a stage change. Each batch carries its shape, and the step rule
(engine/step.py `step_settings`) gives its LR and BN groups. A step never waits for the device; its figures
are reduced every `train.log_period` iterations (engine/window.py). Evaluating and saving close that log
window themselves. The plumbing lives in engine/run.py, which builds the run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mgvideo.config import Config, TrainConfig
from mgvideo.engine import checkpoint
from mgvideo.engine import distributed as D
from mgvideo.engine.evaluate import evaluate_videos
from mgvideo.engine.plots import plot_run
from mgvideo.engine.records import EvalRecord, PreciseBNRecord
from mgvideo.engine.run import (
    Run,
    TestHooks,
    build_run,
    fill_precise_bn,
    save_state,
    take_store_misses,
    unreadable_videos,
)
from mgvideo.engine.step import (
    Optimization,
    StepSettings,
    apply_step_settings,
    bn_plan,
    forward_backward,
    gradient_sync,
    optimizer_step,
    precision,
    step_settings,
)
from mgvideo.engine.window import NonFiniteLossError
from mgvideo.multigrid.batchnorm import has_batchnorm, set_bn_groups
from mgvideo.multigrid.precise_bn import update_bn_stats
from mgvideo.multigrid.schedule import ClipShape, MultigridSchedule, Stage

__all__ = ["NonFiniteLossError", "TestHooks", "train"]


def train(cfg: Config, out_dir: str | Path, force: bool = False, schedule: MultigridSchedule | None = None,
          hooks: TestHooks | None = None) -> dict[str, Any]:
    """Train (or resume) the run in `out_dir`; returns the summary also written to `summary.json`.

    `schedule` replaces the one the config describes (the benchmark's random-shape ablation); `hooks`
    inject faults for tests.
    """
    run = build_run(cfg, Path(out_dir), force, schedule, hooks)
    state = run.state
    try:
        for epoch in range(state.epoch, run.schedule.max_epoch):
            train_epoch(run, epoch)
            state.epoch, state.iteration = epoch + 1, 0
            end_epoch(run, epoch)
            save(run)
        return finish(run)
    finally:
        run.log.close()
        D.shutdown(run.info)


def train_epoch(run: Run, epoch: int) -> None:
    """One pass over the training set, at the shapes and batch sizes the sampler deals. Nothing waits for
    the device but the log points: every `train.log_period` iterations and the epoch's end."""
    state, data, cfg = run.state, run.data, run.cfg
    data.sampler.set_epoch(epoch)
    data.train_set.set_epoch(epoch)
    iterations = len(data.sampler)
    run.opt.wrapped.train()
    waited = time.perf_counter()
    for batch in data.loader:
        started = time.perf_counter()
        settings = step_settings(run.schedule, epoch + state.iteration / iterations, batch.shape, len(batch),
                                 run.opt.lr_rule, cfg.model.bn_base_size, run.info.world_size,
                                 run.opt.micro_batches)
        x = run.inputs(batch)
        loss, correct = train_step(run.opt, run.model, x.clips, x.labels, settings,
                                   dropout_seeds(cfg.train.seed, state.step, run.info, run.opt.micro_batches))
        state.iteration, state.step = state.iteration + 1, state.step + 1
        state.samples += len(batch) * run.info.world_size
        run.window.add(state.step, batch.shape.stage, x.clips, loss, correct, batch.skipped, settings.lr,
                       time.perf_counter() - waited, started - waited)
        save_requested = False
        if state.step % cfg.train.log_period == 0 or state.iteration == iterations:
            save_requested = close_window(run)
        if state.iteration < iterations and state.step in run.eval_steps:  # the last batch's: end_epoch's
            evaluate(run, epoch)
        if checkpoint_due(cfg.train, state.step, save_requested):
            save(run)
        if run.hooks.after_step is not None:
            run.hooks.after_step(run)
        waited = time.perf_counter()


def train_step(opt: Optimization, model: nn.Module, clips: torch.Tensor, labels: torch.Tensor,
               settings: StepSettings, seeds: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Set the step's LR and BN groups on the optimizer and `model`, then forward and backward over the
    step's passes and one optimizer step.

    Pass i takes every `micro_batches`-th clip from i, as rank r + i·world_size of a run with that many
    more devices would, with the same BN groups and, seeded by `seeds[i]`, the same dropout draws; DDP
    all-reduces once, after the last. Returns the mean loss and the top-1 hits as device tensors (no sync).
    """
    apply_step_settings(settings, model, [opt.optimizer])
    k = opt.micro_batches
    loss = correct = torch.zeros((), device=clips.device)
    for i in range(k):
        torch.manual_seed(seeds[i])
        with gradient_sync(opt.wrapped, i == k - 1):
            part_loss, part_correct = forward_backward(opt, clips[i::k], labels[i::k], 1 / k)
        loss, correct = loss + part_loss / k, correct + part_correct
    optimizer_step(opt)
    return loss, correct


def dropout_seeds(seed: int, step: int, info: D.DistInfo, passes: int) -> list[int]:
    """The seed of each pass of a step: from (seed, step, rank) only, so a resumed run draws the same."""
    return [(seed * 1_000_003 + step) * 1031 + info.rank + i * info.world_size for i in range(passes)]


def close_window(run: Run) -> bool:
    """Reduce and log the figures since the last log point (the loop's one sync); returns rank 0's
    'checkpoint now' (`train.checkpoint_minutes`), shared with every rank by the same collective.

    Raises NonFiniteLossError, before any checkpoint of those steps is written, if the loss was not finite.
    """
    if not len(run.window):
        return False
    state, minutes = run.state, run.cfg.train.checkpoint_minutes
    requested = run.info.is_main and minutes > 0 and run.clock() - run.last_save >= 60 * minutes
    iterations = len(run.window)
    epoch = state.epoch + state.iteration / max(len(run.data.sampler), 1)
    records, skipped, requested = run.window.close(run.info, state.step, epoch, run.clock, requested)
    state.skipped += skipped
    for record in records:
        run.log.write(record)
    last = records[-1]
    seconds = sum(r.seconds for r in records)
    clips_per_s = sum(r.batch for r in records) / max(seconds, 1e-9)
    run.log.progress(iterations, last.stage, f"T={last.frames} S={last.crop}", clips_per_s)
    return requested


def save(run: Run, name: str = "last.pt") -> None:
    """Close the log window (so the state's counters are complete), then write the resumable state."""
    close_window(run)
    save_state(run, name)


def checkpoint_due(train: TrainConfig, step: int, requested: bool) -> bool:
    """Every `train.checkpoint_every_iters` steps, or when rank 0's clock asked at the last log point
    (`requested`): no collective of its own."""
    every = train.checkpoint_every_iters
    return requested or bool(every and step % every == 0)


def end_epoch(run: Run, epoch: int) -> None:
    """Evaluate if this step is an evaluation step not yet evaluated (the final one always is); at a stage
    end, BN statistics at the stage's shape (unless an evaluation just refreshed them at the full shape);
    the epoch's store misses; at a stage end, the stage checkpoint; with `train.eval_period`, an
    `epoch_NNN.pt` checkpoint at each period's end (as PySlowFast's CHECKPOINT_PERIOD)."""
    state, stage = run.state, run.schedule.stage_at(epoch)
    stage_end = stage.end_epoch == epoch + 1
    period = run.cfg.train.eval_period
    if state.step in run.eval_steps and state.eval_step != state.step:
        evaluate(run, epoch)  # its precise BN at the eval shape supersedes the stage-end one
    elif stage_end:
        started = time.perf_counter()
        refresh_bn(run, *stage_shape(run.schedule, stage, run.base_batch), epoch)
        run.log.write(PreciseBNRecord(step=run.state.step, epoch=epoch + 1, stage=stage.index,
                                      time=run.clock(), seconds=round(time.perf_counter() - started, 3)))
    note_store_misses(run, epoch)
    if stage_end:
        save(run, f"stage_{stage.index:02d}.pt")
    elif period and (epoch + 1) % period == 0:
        save(run, f"epoch_{epoch + 1:03d}.pt")


def note_store_misses(run: Run, epoch: int) -> None:
    """Count the epoch's clips that `data.store` should have served but the originals did, and name the
    first few videos: a store that misses silently loses the coarse stages' speed-up."""
    misses, videos = take_store_misses(run)
    run.state.store_misses += misses
    if misses:
        first = ", ".join(videos[:3]) + (f" and {len(videos) - 3} more" if len(videos) > 3 else "")
        run.log.message(f"warning: store {run.cfg.data.store}: {misses} clips of epoch {epoch + 1} read from "
                        f"their originals (no entry, or a stale one): {first}")


def refresh_bn(run: Run, batch: int, shape: ClipShape, epoch: int) -> None:
    """Precise BN: exact BN statistics over training batches at `shape`; none without BN."""
    if not has_batchnorm(run.model):
        return
    wanted = precise_bn_batches(run.cfg.train, batch, run.info.world_size)
    num = fill_precise_bn(run, shape, batch, wanted, epoch)
    if num == 0:
        return
    k = run.opt.micro_batches  # as in training: a forward holds every k-th clip, with the same BN groups
    plan = bn_plan(batch, shape.stage_batch, run.cfg.model.bn_base_size, run.info.world_size, k)
    set_bn_groups(run.model, plan)
    clips = (x[i::k] for b in run.data.precise for x in [run.inputs(b).clips] for i in range(k))
    with precision(run.inputs.device, run.opt.amp_dtype):  # as training normalised: under its autocast
        update_bn_stats(run.model, clips, num * k, average_across_ranks=run.info.enabled)  # DDP: ranks merged


def precise_bn_batches(train: TrainConfig, batch: int, world_size: int) -> int:
    """How many per-device batches of `batch` clips precise BN uses: `train.precise_bn_batches`, capped
    by `train.precise_bn_clips` (all devices together) when that is set."""
    t = train
    if t.precise_bn_clips == 0:
        return t.precise_bn_batches
    return min(t.precise_bn_batches, math.ceil(t.precise_bn_clips / (batch * world_size)))


def evaluate(run: Run, epoch: int) -> dict[str, float]:
    """Validation at the full shape, after precise BN at that shape so the statistics match it. The log
    window is closed first, and the run's training clock paused throughout: evaluation is not training."""
    close_window(run)
    full = run.schedule.full_shape(run.base_batch)
    with run.clock.paused():
        started = time.perf_counter()
        refresh_bn(run, run.base_batch, full, epoch)
        refreshed = time.perf_counter()
        result, scores, labels = evaluate_videos(run.model, run.data.val, run.inputs, run.info, "sum",
                                                 run.cfg.multi_label, run.cfg.test.max_failed_fraction,
                                                 run.opt.amp_dtype)
        if run.state.step == run.length.total and not run.cfg.multi_label:
            save_val_hits(run, scores, labels, result.get("failed", []))
        state = run.state
        state.last_eval, state.eval_step = result, state.step
        run.log.write(EvalRecord(step=state.step, epoch=epoch + 1 if state.iteration == 0 else epoch,
                                 samples=state.samples, time=run.clock(), wall=run.clock.wall(), **result,
                                 bn_s=round(refreshed - started, 3),
                                 val_s=round(time.perf_counter() - refreshed, 3)))
    metric = f"mAP {result['mAP']:.2f}" if "mAP" in result else f"top-1 {result['top1']:.2f}"
    run.log.message(f"eval after step {state.step} ({run.clock() / 60:.1f} min of training): {metric}")
    return result


def save_val_hits(run: Run, scores: torch.Tensor, labels: torch.Tensor, failed: list[str]) -> None:
    """The final model on each validation video read, in video order (`val_hits.json`): its name, label,
    predicted class and top-1 hit (0/1); the benchmark bootstraps its intervals from the hits."""
    if run.saves:
        names = [r.path for r in run.data.val.dataset.records if r.path not in set(failed)]
        predicted = scores.argmax(1)
        hits = {"videos": names, "labels": labels.tolist(), "predicted": predicted.tolist(),
                "hits": (predicted == labels).int().tolist()}
        (run.out_dir / "val_hits.json").write_text(json.dumps(hits))


def read_val_hits(path: Path) -> list[int]:
    """The per-video top-1 hits of a `val_hits.json` (also of the bare list older runs wrote)."""
    data = json.loads(path.read_text())
    return data["hits"] if isinstance(data, dict) else data


def stage_shape(schedule: MultigridSchedule, stage: Stage, base_batch: int) -> tuple[int, ClipShape]:
    """The long-cycle shape of a stage (its last short-cycle slot) and its per-device batch."""
    return schedule.shapes(stage, base_batch)[-1]


def finish(run: Run) -> dict[str, Any]:
    """Final weights (`model_final.pt`, a plain state dict), `summary.json` and the plots."""
    state, train_set = run.state, run.data.train_set
    # Multigrid trains multigrid.epoch_factor times the baseline's epochs (rounded to whole stages), each
    # with far fewer iterations: `epochs` is this run's, `baseline_epochs` what solver.max_epoch asked for.
    summary = {
        "val": state.last_eval, "wall_clock_s": round(run.clock(), 1), "iterations": state.step,
        "epochs": run.schedule.max_epoch, "baseline_epochs": run.cfg.solver.max_epoch,
        "samples": state.samples, "baseline_iterations": run.length.baseline,
    }
    # The one iteration saving: the baseline schedule's iterations on the same data over this run's.
    summary["iteration_saving"] = round(summary["baseline_iterations"] / max(state.step, 1), 3)
    flags = train_set.truncated.to(run.inputs.device, torch.float32)
    truncated = D.all_reduce_tensor(flags, run.info)  # any rank's, since this process started
    unreadable = [train_set.records[i].path for i in unreadable_videos(run)]  # since the run started
    summary.update(truncated_videos=int((truncated > 0).sum()), skipped_videos=len(unreadable),
                   unreadable_videos=unreadable, replaced_clips=state.skipped,
                   store_misses=state.store_misses)
    if run.saves:  # every node's --out gets the final weights and summary
        checkpoint.save(run.model.state_dict(), run.out_dir / "model_final.pt")
        (run.out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
        plot_run(run.out_dir)
        if unreadable:
            run.log.message(f"skipped {len(unreadable)} unreadable videos ({state.skipped} clips taken from "
                            f"other videos instead): {', '.join(unreadable)}")
    D.barrier(run.info)
    return summary
