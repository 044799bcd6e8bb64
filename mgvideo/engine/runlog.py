"""What a run reports: `metrics.jsonl` (training records per shape every `train.log_period` iterations,
one per evaluation), `train.log` (every line the run prints, and the data's warnings such as skipped videos,
with the time; appended to across resumes), TensorBoard when installed, and a progress bar. Only rank 0
writes; the other ranks get a silent log."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tqdm import tqdm

from mgvideo.engine.records import EvalRecord, Record, to_dict, to_json


class RunLog:
    """Appends JSON records to `metrics.jsonl`; on resume, first cuts the file back to the records that
    the checkpoint had seen, so that a crashed segment leaves no duplicates."""

    def __init__(self, out_dir: Path, enabled: bool, keep_records: int, total_iterations: int,
                 done_iterations: int, console: bool = True) -> None:
        self.enabled = enabled
        self.console = console  # the progress bar and messages on the terminal (one rank of the job)
        self.path = out_dir / "metrics.jsonl"
        self.records = keep_records
        self.total_iterations = total_iterations  # of the whole run: where `train.eval_points` fall
        self._tb = None
        self._bar = None
        self._handlers: list[logging.Handler] = []
        if not enabled:
            return
        self._text = open(out_dir / "train.log", "a", buffering=1)  # line-buffered: readable while running
        self._watch_warnings(out_dir / "train.log")
        lines = self.path.read_text().splitlines(keepends=True) if self.path.exists() else []
        self.path.write_text("".join(lines[:keep_records]))
        self._file = open(self.path, "a")
        try:
            from torch.utils.tensorboard import SummaryWriter  # optional: needs the tensorboard package

            self._tb = SummaryWriter(str(out_dir / "tensorboard"))
        except ImportError:
            pass
        if not console:
            return
        self._bar = tqdm(total=total_iterations, initial=done_iterations, unit="it", dynamic_ncols=True,
                         mininterval=1.0)

    def write(self, record: Record) -> None:
        """Append one record (also counted when disabled, so every rank agrees on `records`)."""
        self.records += 1
        if not self.enabled:
            return
        self._file.write(to_json(record) + "\n")
        if isinstance(record, EvalRecord):
            self._file.flush()
        if self._tb is not None:
            for key, value in to_dict(record).items():
                if isinstance(value, int | float) and key not in ("step", "epoch"):
                    self._tb.add_scalar(f"{record.kind}/{key}", value, record.step)

    def progress(self, iterations: int, stage: int, shape: str, clips_per_s: float) -> None:
        """Advance the bar by `iterations` and show the last stage and shape, and the throughput."""
        if self._bar is not None:
            self._bar.update(iterations)
            self._bar.set_postfix_str(f"stage {stage}, clips {shape}, {clips_per_s:.1f} clips/s",
                                      refresh=False)

    def _watch_warnings(self, path: Path) -> None:
        """Copy mgvideo's warnings (a skipped or truncated video; loader workers inherit the handler) into
        `train.log`. Where nothing else shows them, they go to stderr too, as they did before."""
        logger = logging.getLogger("mgvideo")
        to_file = logging.FileHandler(path)
        to_file.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%Y-%m-%d %H:%M:%S"))
        self._handlers.append(to_file)
        if not logging.getLogger().hasHandlers():  # logging's last resort would print them; keep that
            self._handlers.append(OffTheBar(sys.stderr))
        for handler in self._handlers:
            handler.setLevel(logging.WARNING)
            logger.addHandler(handler)

    def message(self, text: str) -> None:
        """A line above the bar, also appended to `train.log` with the time."""
        if self.enabled:
            if self.console:
                tqdm.write(text)
            self._text.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}\n")

    def flush(self) -> None:
        """Make the records durable before a checkpoint refers to them."""
        if self.enabled:
            self._file.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        self._file.close()
        self._text.close()
        for handler in self._handlers:
            logging.getLogger("mgvideo").removeHandler(handler)
            handler.close()


class OffTheBar(logging.StreamHandler):
    """A warning on a line of its own, never appended to the progress bar's line: loader workers print
    from other processes, where `tqdm.write` cannot move the bar aside. On a terminal the bar's line is
    cleared first (the bar redraws itself at its next update); elsewhere the warning starts a new line."""

    def format(self, record: logging.LogRecord) -> str:
        isatty = getattr(self.stream, "isatty", lambda: False)()
        return ("\r\x1b[2K" if isatty else "\n") + super().format(record)


class Stopwatch:
    """The run's clock, carried over across resumes. Calling it gives the training time: data loading and
    training, without the spans spent inside `paused()` (evaluation). `wall()` counts everything."""

    def __init__(self, elapsed: float = 0.0, wall_elapsed: float | None = None) -> None:
        self.offset = elapsed  # training seconds of earlier segments (resumes)
        self.wall_offset = max(elapsed, wall_elapsed or 0.0)  # older checkpoints hold no wall time
        self.start = time.perf_counter()
        self.paused_s = 0.0  # paused seconds in this segment
        self._paused_at: float | None = None

    def __call__(self) -> float:
        now = time.perf_counter() if self._paused_at is None else self._paused_at
        return self.offset + now - self.start - self.paused_s

    def wall(self) -> float:
        """Seconds since the run began, pauses included."""
        return self.wall_offset + time.perf_counter() - self.start

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Stop the training clock for the duration of the block (a nested block changes nothing)."""
        if self._paused_at is not None:
            yield
            return
        self._paused_at = time.perf_counter()
        try:
            yield
        finally:
            self.paused_s += time.perf_counter() - self._paused_at
            self._paused_at = None
