"""The run's state belongs to the job, not to a node: every rank starts from the same checkpoint, wherever
`--out` lives.

Each rank looks in its own `--out/checkpoints` for its newest readable checkpoint (a `last.pt` that cannot be
read is passed over for the stage and epoch checkpoints beside it). The ranks then compare notes through the
process group: their configs and data must agree, or every rank stops with one line naming the rank that
cannot follow and what differs. The rank holding the newest checkpoint provides it; ranks that lack that
very state receive its bytes through the process group, so node ranks may change across a restart and a
node's folder may be empty.
"""

from __future__ import annotations

import io
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mgvideo.config import Config, config_changes, runtime_keys, to_dict
from mgvideo.engine import checkpoint
from mgvideo.engine import distributed as D
from mgvideo.errors import CheckpointError

PATTERNS = ("last.pt", "stage_*.pt", "epoch_*.pt")  # what save_state writes, newest first on a tie


@dataclass
class Offer:
    """What one rank brings to the agreement: where it is, its newest readable checkpoint, and what it
    must agree on with every other rank."""

    rank: int
    host: str
    out: str
    config: dict[str, Any]  # the fingerprinted keys of its config
    facts: dict[str, int]  # e.g. the number of training and validation videos it sees
    step: int = -1  # of its newest readable checkpoint; -1: none
    path: str = ""
    fingerprint: str = ""  # of that checkpoint
    changes: list[str] = field(default_factory=list)  # its config against the checkpoint's
    unreadable: list[str] = field(default_factory=list)  # checkpoints it could not read (and why)
    log_lines: int = 0  # lines of metrics.jsonl in its folder
    token: str = field(default_factory=lambda: os.urandom(8).hex())  # rank 0's names this attempt's folder


@dataclass
class Agreed:
    """The state every rank starts from (None: a fresh run), where it came from, and what to say."""

    saved: dict[str, Any] | None
    token: str  # rank 0's: tells a node whether it shares rank 0's --out (`claim_folder`)
    source: str = ""
    provider: int = -1
    metrics: str | None = None  # the provider's metrics.jsonl lines, for a writer whose copy is short
    unreadable: list[str] = field(default_factory=list)  # this rank's checkpoints that could not be read


def scan(directory: Path) -> tuple[Path | None, dict[str, Any] | None, list[str]]:
    """This folder's newest readable checkpoint (by step; `last.pt` first on a tie), its state, and a line
    for each checkpoint that could not be read."""
    best: tuple[Path | None, dict[str, Any] | None] = (None, None)
    unreadable = []
    paths = [p for pattern in PATTERNS for p in sorted(directory.glob(pattern), reverse=True)]
    for path in paths:
        try:
            state = checkpoint.peek(path)
            step = int(state["state"]["step"])
        except (CheckpointError, KeyError, TypeError, ValueError) as err:
            unreadable.append(f"{path}: {err}" if not isinstance(err, CheckpointError) else str(err))
            continue
        if best[1] is None or step > int(best[1]["state"]["step"]):
            best = (path, state)
    return best[0], best[1], unreadable


def agree(cfg: Config, out_dir: Path, expected: str, force: bool, info: D.DistInfo,
          facts: dict[str, int], device: torch.device) -> Agreed:
    """Find the newest checkpoint any rank holds and give its state to every rank (see the module doc).

    `expected` is this run's fingerprint; a checkpoint with another one is refused unless `force`.
    Raises the same CheckpointError on every rank when the ranks cannot agree.
    """
    path, state, unreadable = scan(out_dir / "checkpoints")
    metrics = out_dir / "metrics.jsonl"
    mine = Offer(info.rank, socket.gethostname(), str(out_dir.resolve()), _fingerprinted(cfg), facts,
                 unreadable=unreadable, log_lines=_count_lines(metrics))
    if state is not None:
        mine.step, mine.path = int(state["state"]["step"]), str(path)
        mine.fingerprint = state.get("fingerprint")
        mine.changes = config_changes(state.get("config"), cfg)
    offers: list[Offer] = D.all_gather_object(mine, info)
    _check_ranks_agree(offers)
    best = max(offers, key=lambda o: (o.step, -o.rank))
    agreed = Agreed(None, offers[0].token, unreadable=unreadable)
    if best.step < 0:
        return agreed
    where = f"rank {best.rank}" + (f" on {best.host}" if len({o.host for o in offers}) > 1 else "")
    agreed.source, agreed.provider = f"{best.path} ({where})" if info.enabled else best.path, best.rank
    checkpoint.check_fingerprint({"fingerprint": best.fingerprint}, expected, best.path, force, best.changes)
    # A rank holding a checkpoint of the same step and fingerprint holds the same training state.
    has_it = [o.step == best.step and o.fingerprint == best.fingerprint for o in offers]
    data = None
    if not all(has_it):
        data = Path(best.path).read_bytes() if info.rank == best.rank else None
        data = D.broadcast_bytes(data, best.rank, info, device)
    # Read whole, not memory-mapped as scanned: the optimizer would keep mapped tensors as its own.
    agreed.saved = checkpoint.load(path) if has_it[info.rank] else _load_bytes(data, best.path)
    records = int(agreed.saved["state"].get("records", 0))
    if any(o.log_lines < records for o in offers):  # a writer's metrics.jsonl misses lines: send them
        text = _head(metrics, records) if info.rank == best.rank else None
        agreed.metrics = D.broadcast_bytes(text.encode() if text is not None else None, best.rank, info,
                                           device).decode()
    return agreed


def _fingerprinted(cfg: Config) -> dict[str, Any]:
    skip = runtime_keys()
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else key, inner)
        elif prefix not in skip:
            flat[prefix] = value

    walk("", to_dict(cfg))
    return flat


def _check_ranks_agree(offers: list[Offer]) -> None:
    """Every rank must train the same recipe on the same data as rank 0, or all stop, naming who differs."""
    first = offers[0]
    for offer in offers[1:]:
        who = f"rank {offer.rank} ({offer.host}, --out {offer.out})"
        keys = sorted(k for k in set(first.config) | set(offer.config)
                      if first.config.get(k) != offer.config.get(k))
        if keys:
            diff = "; ".join(f"{k}: {first.config.get(k)!r} on rank 0, {offer.config.get(k)!r} here"
                             for k in keys[:3])
            raise CheckpointError(f"{who} cannot follow rank 0: its config differs ({diff})")
        facts = [k for k in first.facts if first.facts[k] != offer.facts.get(k)]
        if facts:
            diff = "; ".join(f"{k}: {first.facts[k]} on rank 0, {offer.facts.get(k)} here" for k in facts)
            raise CheckpointError(f"{who} cannot follow rank 0: its data differs ({diff}); every node needs "
                                  "the same annotation lists")


def _load_bytes(data: bytes, source: str) -> dict[str, Any]:
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # as checkpoint.load: torch raises several types
        raise CheckpointError(f"{source}: the copy received from its rank cannot be read: {err}") from err
    return state


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


def _head(path: Path, lines: int) -> str:
    try:
        return "".join(path.read_text().splitlines(keepends=True)[:lines])
    except OSError:
        return ""


def set_aside(out_dir: Path, lines: list[str], log: Callable[[str], None]) -> None:
    """Rename each checkpoint this node found unreadable to `NAME.unreadable-TIME`, so that the next resume
    does not trip on it and nothing is lost."""
    for line in lines:
        path = Path(line.split(": ", 1)[0])
        if path.parent != out_dir / "checkpoints" or not path.exists():
            continue
        target = path.with_name(f"{path.name}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        try:
            os.replace(path, target)
        except OSError:
            continue
        log(f"checkpoint {path} cannot be read; set aside as {target.name}")


MARKER = ".attempt"  # in --out: rank 0's token of the current attempt


def claim_folder(out_dir: Path, info: D.DistInfo, token: str) -> bool:
    """Create `out_dir` where this process writes it, and say whether it does: rank 0 always, and the first
    process of each node whose `--out` is not the folder rank 0 writes (node-local disks), so that every
    node keeps the run's checkpoints and logs. A shared folder is recognised by rank 0's `token` in it."""
    if info.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / MARKER).write_text(token)
    D.barrier(info)
    saves = info.is_main
    if not info.is_main and info.local_rank == 0:
        try:
            shared = (out_dir / MARKER).read_text() == token
        except OSError:
            shared = False
        if not shared:
            out_dir.mkdir(parents=True, exist_ok=True)
            saves = True
    D.barrier(info)  # nobody reads the marker after this point
    return saves


def restore_metrics(out_dir: Path, metrics: str | None, records: int) -> None:
    """Give this folder the run's first `records` lines of metrics.jsonl, received from the rank that
    resumed the run (`agree`), where its own copy is shorter (a node that did not write them)."""
    path = out_dir / "metrics.jsonl"
    if metrics is not None and _count_lines(path) < records:
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(metrics)
        os.replace(tmp, path)
