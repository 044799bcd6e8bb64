"""End-of-run PNG plots from `metrics.jsonl`: loss, LR and validation accuracy against wall-clock time,
and the timeline of clip shapes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the headless backend)

from mgvideo.engine.runlog import read_records  # noqa: E402


def plot_run(out_dir: Path) -> list[Path]:
    """Write `training.png` and `shapes.png` next to `metrics.jsonl`; returns the files written."""
    records = read_records(out_dir / "metrics.jsonl")
    its = [r for r in records if r["kind"] == "train"]
    evals = [r for r in records if r["kind"] == "eval"]
    if not its:
        return []
    minutes = [r["time"] / 60 for r in its]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(minutes, [r["loss"] for r in its], lw=0.8)
    axes[0].set(title="training loss", xlabel="wall-clock (min)", ylabel="loss")
    axes[1].plot(minutes, [r["lr"] for r in its])
    axes[1].set(title="learning rate", xlabel="wall-clock (min)", ylabel="LR")
    metric = "mAP" if evals and "mAP" in evals[0] else "top1"
    axes[2].plot([r["time"] / 60 for r in evals], [r.get(metric, float("nan")) for r in evals], "o-")
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


def shapes_figure(its: list[dict]):
    """Clip size (T·S²) per logged iteration, coloured by the batch size, with a colourbar for it."""
    fig, ax = plt.subplots(figsize=(10, 3.5))
    steps = [r["step"] for r in its]
    points = ax.scatter(steps, [r["frames"] * r["crop"] ** 2 / 1e3 for r in its], s=4,
                        c=[r["batch"] for r in its], cmap="viridis")
    fig.colorbar(points, ax=ax, label="clips per batch (per device)")
    for step, label in _stage_changes(its):
        ax.axvline(step, color="grey", lw=0.5)
        ax.text(step, ax.get_ylim()[1], label, fontsize=7, va="top", rotation=90)
    ax.set(title="clip shape per iteration (colour: batch size)", xlabel="iteration",
           ylabel="T·S² (thousands of pixels)")
    fig.tight_layout()
    return fig


def _stage_changes(its: list[dict]) -> list[tuple[int, str]]:
    changes, last = [], None
    for r in its:
        if r["stage"] != last:
            changes.append((r["step"], f"stage {r['stage']}"))
            last = r["stage"]
    return changes
