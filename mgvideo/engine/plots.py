"""PNG plots: at a run's end from `metrics.jsonl` (loss, LR and validation accuracy against wall-clock
time, and the timeline of clip shapes), and a planned schedule (`mgvideo plan --plot`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

from mgvideo.engine.records import EvalRecord, TrainRecord, read_records  # noqa: E402
from mgvideo.multigrid.lr import LRConfig, lr_at  # noqa: E402
from mgvideo.multigrid.schedule import MultigridSchedule  # noqa: E402


def plot_run(out_dir: Path) -> list[Path]:
    """Write `training.png` and `shapes.png` next to `metrics.jsonl`; returns the files written."""
    records = read_records(out_dir / "metrics.jsonl")
    its = [r for r in records if isinstance(r, TrainRecord)]
    evals = [r for r in records if isinstance(r, EvalRecord)]
    if not its:
        return []
    minutes = [r.time / 60 for r in its]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(minutes, [r.loss for r in its], lw=0.8)
    axes[0].set(title="training loss", xlabel="wall-clock (min)", ylabel="loss")
    axes[1].plot(minutes, [r.lr for r in its])
    axes[1].set(title="learning rate", xlabel="wall-clock (min)", ylabel="LR")
    metric = evals[0].metric if evals else "top1"
    axes[2].plot([r.time / 60 for r in evals], [r.score for r in evals], "o-")
    axes[2].set(title=f"validation {metric} (full shape)", xlabel="wall-clock (min)", ylabel="%")
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    training = out_dir / "training.png"
    fig.savefig(training, dpi=100)
    plt.close(fig)

    fig = shapes_figure(its)
    shapes = out_dir / "shapes.png"
    fig.savefig(shapes, dpi=100)
    plt.close(fig)
    return [training, shapes]


def shapes_figure(its: list[TrainRecord]):
    """Clip size (T·S²) per logged iteration, coloured by the batch size, with a colourbar for it."""
    fig, ax = plt.subplots(figsize=(10, 3.5))
    steps = [r.step for r in its]
    points = ax.scatter(steps, [r.frames * r.crop ** 2 / 1e3 for r in its], s=4,
                        c=[r.batch for r in its], cmap="viridis")
    fig.colorbar(points, ax=ax, label="clips per batch (per device)")
    for step, label in _stage_changes(its):
        ax.axvline(step, color="grey", lw=0.5)
        ax.text(step, ax.get_ylim()[1], label, fontsize=7, va="top", rotation=90)
    ax.set(title="clip shape per iteration (colour: batch size)", xlabel="iteration",
           ylabel="T·S² (thousands of pixels)")
    fig.tight_layout()
    return fig


def _stage_changes(its: list[TrainRecord]) -> list[tuple[int, str]]:
    changes, last = [], None
    for r in its:
        if r.stage != last:
            changes.append((r.step, f"stage {r.stage}"))
            last = r.stage
    return changes


def plot_schedule(schedule: MultigridSchedule, lr_cfg: LRConfig, batch_size: int, path: Path) -> None:
    """`mgvideo plan --plot`: frames, crop, per-device batch (`batch_size` times the slot's factor) and LR
    against epoch, into a PNG."""
    epochs = list(range(schedule.max_epoch + 1))
    stages = [schedule.stage_at(e) for e in epochs]
    fig, (ax_shape, ax_batch, ax_lr) = plt.subplots(3, 1, sharex=True, figsize=(9, 8))
    ax_shape.step(epochs, [s.crop for s in stages], where="post", label="crop S", color="C1")
    ax_shape.set_ylabel("long-cycle crop S")
    ax_frames = ax_shape.twinx()
    ax_frames.step(epochs, [s.frames for s in stages], where="post", label="frames T", color="C0")
    ax_frames.set_ylabel("long-cycle frames T")
    ax_frames.legend(loc="lower right", fontsize=8)
    for slot in range(max(len(s.slots) for s in schedule.stages)):
        batch = [batch_size * s.slots[min(slot, len(s.slots) - 1)].batch_factor for s in stages]
        ax_batch.step(epochs, batch, where="post", label=f"short-cycle slot {slot}")
    ax_batch.set_yscale("log", base=2)
    ax_batch.set_ylabel("per-device batch")
    fine = [e / 10 for e in range(10 * schedule.max_epoch)]
    ax_lr.plot(fine, [lr_at(e, schedule, lr_cfg) for e in fine], label=f"{schedule.cfg.lr_policy} LR")
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    for ax in (ax_shape, ax_batch, ax_lr):
        for end in schedule.stage_ends()[:-1]:
            ax.axvline(end, color="grey", lw=0.5, alpha=0.5)
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"multigrid schedule: {len(schedule.stages)} stages, {schedule.max_epoch} epochs "
                 f"(baseline {schedule.cfg.max_epoch})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
