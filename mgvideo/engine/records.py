"""The records of `metrics.jsonl`, one JSON object a line: a dataclass per `kind`, written by the run log
and read by the plots, the benchmark report and the GPU check.

Fields keep the names and the order of the lines written so far. Fields that older files lack are None
(or their old meaning, as `iterations` = 1) and a None field is left out of the line.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mgvideo.errors import MgvideoError


class RecordError(MgvideoError, ValueError):
    """A `metrics.jsonl` line that is not a record: bad JSON, an unknown kind, a missing or unknown field.
    `read_records` names the file and line."""


@dataclass(frozen=True, kw_only=True)
class TrainRecord:
    """The training figures of one clip shape over a log period (`train.log_period` iterations)."""

    step: int  # the last step of the period
    epoch: float
    kind: str = field(default="train", init=False)  # after step and epoch, where the trainer wrote it
    stage: int
    frames: int
    crop: int
    iterations: int = 1  # of this shape in the period; older records were one iteration each
    batch: int  # clips over those iterations, all ranks
    loss: float
    top1: float | None = None  # training top-1 (%); older records have none
    lr: float
    clips_per_s: float
    data_wait: float  # fraction of the time spent waiting for data
    time: float  # the training clock

    @property
    def seconds(self) -> float:
        """Wall-clock of the record's iterations."""
        return self.batch / max(self.clips_per_s, 1e-9)

    @property
    def ms_per_iteration(self) -> float:
        return 1000 * self.seconds / self.iterations

    @property
    def clips_per_iteration(self) -> int:
        return self.batch // self.iterations


@dataclass(frozen=True, kw_only=True)
class EvalRecord:
    """One validation at the full shape, after precise BN at that shape; the training clock paused."""

    kind: str = field(default="eval", init=False)
    step: int
    epoch: int
    samples: int  # training clips seen
    time: float  # the training clock
    wall: float | None = None  # seconds since the run began; older records have none
    top1: float | None = None  # single-label data: top-1 and top-5 (%)
    top5: float | None = None
    mAP: float | None = None  # multi-label data (%)
    count: int  # videos read
    views: int
    failed_views: int | None = None  # older records have none of the failure counts
    failed_videos: int | None = None
    failed: list[str] | None = None  # the unread videos, when there are any
    bn_s: float | None = None  # precise BN's seconds, and validation's
    val_s: float | None = None

    def __post_init__(self) -> None:
        if self.top1 is None and self.mAP is None:
            raise RecordError("an eval record needs 'top1' or 'mAP'")

    @property
    def metric(self) -> str:
        """The headline metric's name: mAP on multi-label data, else top1."""
        return "top1" if self.mAP is None else "mAP"

    @property
    def score(self) -> float:
        """The headline metric's value (%)."""
        return self.top1 if self.mAP is None else self.mAP

    @property
    def seconds(self) -> float:
        """Off the training clock: precise BN and validation."""
        return (self.bn_s or 0.0) + (self.val_s or 0.0)


@dataclass(frozen=True, kw_only=True)
class PreciseBNRecord:
    """Precise BN at a stage's end, at the stage's shape (none where an evaluation refreshed it)."""

    kind: str = field(default="precise_bn", init=False)
    step: int
    epoch: int
    stage: int
    time: float  # the training clock
    seconds: float


Record = TrainRecord | EvalRecord | PreciseBNRecord
KINDS: dict[str, type[Record]] = {c.kind: c for c in (TrainRecord, EvalRecord, PreciseBNRecord)}


def to_dict(record: Record) -> dict[str, Any]:
    """The record as the JSON object of its line (None fields left out)."""
    return {f.name: v for f in dataclasses.fields(record) if (v := getattr(record, f.name)) is not None}


def to_json(record: Record) -> str:
    """The record's line of `metrics.jsonl`, without the newline."""
    return json.dumps(to_dict(record))


def from_dict(data: Any) -> Record:
    """The record of a JSON object; RecordError for an unknown kind or a missing or unknown field."""
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind not in KINDS:
        raise RecordError(f"unknown record kind {kind!r} (known: {', '.join(KINDS)})")
    cls = KINDS[kind]
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    if unknown := sorted(data.keys() - fields.keys() - {"kind"}):
        raise RecordError(f"{kind} record: unknown field(s) {', '.join(unknown)}")
    missing = [n for n, f in fields.items() if n not in data and f.default is dataclasses.MISSING]
    if missing:
        raise RecordError(f"{kind} record: missing field(s) {', '.join(missing)}")
    return cls(**{k: v for k, v in data.items() if k != "kind"})


def from_json(line: str) -> Record:
    """The record of one `metrics.jsonl` line."""
    try:
        data = json.loads(line)
    except json.JSONDecodeError as err:
        raise RecordError(f"not JSON ({err})") from None
    return from_dict(data)


def read_records(path: Path) -> list[Record]:
    """The records of a `metrics.jsonl`. A last line cut by a kill (no newline, not JSON) is left out;
    any other bad line is a RecordError naming the file and line."""
    text = Path(path).read_text()
    lines = text.splitlines()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines) and not text.endswith("\n"):
                break  # the run was killed while writing it
            raise RecordError(f"{path}:{number}: not JSON ({err})") from None
        try:
            records.append(from_dict(data))
        except RecordError as err:
            raise RecordError(f"{path}:{number}: {err}") from None
    return records
