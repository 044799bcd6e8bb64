"""A run's data, made ready before training: the synthetic set generated (for `dataset: synthetic`), the
frame cache filled, and (`mgvideo data prepare`) the multi-resolution store transcoded, in one place.

`prepare_data` runs before the process group starts. Every process of a run calls it; a file lock next to
the data lets the first do the work while the others wait on the lock, which has no timeout (a collective
would give up after the process group's timeout), and then find the work done. The same lock keeps two
runs that share a dataset or a cache from preparing it at once. Where the file system has no `flock`
(some network file systems), the lock is a file created exclusively, holding its host and pid, kept fresh
while held and broken once stale. Work found done is never locked, so read-only data needs no lock file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager, suppress
from multiprocessing import get_context
from pathlib import Path

from mgvideo.config import Config
from mgvideo.data import store as S
from mgvideo.data.annotations import Annotations
from mgvideo.data.cache import FrameCache, cache_directory
from mgvideo.data.datasets import REFERENCE_JITTER, largest_short_side
from mgvideo.data.formats import dataset_format
from mgvideo.data.loader import resolve_workers
from mgvideo.errors import CacheError, ConfigError
from mgvideo.multigrid.schedule import MultigridSchedule

LOCK = ".prepare.lock"
NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS)  # flock unsupported here: use a lock file
POLL_S = 0.5  # how often a waiter looks at a held lock file
HEARTBEAT_S = 30.0  # how often its holder touches it
STALE_S = 600.0  # a lock file untouched this long is its crashed holder's (on any host)


def prepare_data(cfg: Config, log: Callable[[str], None] = print) -> None:
    """Generate the synthetic set if the run needs it, then fill the frame cache with the training and
    validation videos; a no-op where both are done already."""
    ensure_synthetic_data(cfg)
    cache = build_frame_cache(cfg)
    if cache is not None:
        fill_frame_cache(cfg, cache, log)


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created if need be); waits as long as it takes. Without
    flock on this file system, holds the lock file `path.held` instead (`_held`)."""
    with open(path, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX)
        except OSError as err:
            if err.errno not in NO_FLOCK:
                raise
        else:
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
            return
    with _held(Path(f"{path}.held")):
        yield


@contextmanager
def _held(path: Path) -> Iterator[None]:
    """Create `path` exclusively (O_CREAT | O_EXCL), writing 'host pid' into it, waiting while another
    holds it and breaking it when stale; touched every HEARTBEAT_S while held, removed on release."""
    me = f"{socket.gethostname()} {os.getpid()}"
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            if not _break_if_stale(path):
                time.sleep(POLL_S)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(me + "\n")
        break
    stop = threading.Event()
    beat = threading.Thread(target=_heartbeat, args=(path, stop), daemon=True)
    beat.start()
    try:
        yield
    finally:
        stop.set()
        beat.join()
        with suppress(FileNotFoundError):
            path.unlink()


def _heartbeat(path: Path, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        with suppress(OSError):
            os.utime(path)


def _break_if_stale(path: Path) -> bool:
    """Remove the lock file `path` if its holder is gone (this host, its pid no longer runs) or it has not
    been touched for STALE_S; True if it was removed (or had gone already)."""
    try:
        owner, age = path.read_text(), time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return True
    host, _, pid = owner.strip().partition(" ")
    dead = host == socket.gethostname() and pid.isdigit() and not _running(int(pid))
    if not dead and age < STALE_S:
        return False
    aside = path.with_name(f"{path.name}.stale-{socket.gethostname()}-{os.getpid()}")
    with suppress(FileNotFoundError):
        os.rename(path, aside)  # one breaker wins; a holder that came meanwhile is put back below
        if aside.read_text() != owner:
            with suppress(FileExistsError):
                os.link(aside, path)
        aside.unlink()
    return True


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def ensure_synthetic_data(cfg: Config, workers: int | None = None) -> None:
    """For a generated dataset (`data.dataset: synthetic`), generate the videos into `data.root` unless a
    complete set of this version is there. A named size (synthetic.SIZES) is rendered by `workers` processes
    (None: the generator's default of up to 2, which suits a shared machine; the videos are the same for any
    number); a TRAINxVAL size always uses that default."""
    d = cfg.data
    if not dataset_format(d.dataset).generated:
        return
    from mgvideo.data import synthetic  # imported lazily: only synthetic runs need it

    seed, root = d.synthetic_seed, Path(d.root)  # the draw; another draw's folder is an error
    if _synthetic_done(root, seed):
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"data.root: cannot create {root} for the synthetic set: {err}") from err
    with locked(root / LOCK):
        if _synthetic_done(root, seed):  # another process made it while we waited
            return
        if d.synthetic_size in synthetic.SIZES:
            synthetic.generate(d.root, seed=seed, size=d.synthetic_size, workers=workers)
            return
        train, _, val = d.synthetic_size.partition("x")
        if not (train.isdigit() and val.isdigit() and int(train) > 0 and int(val) > 0):
            raise ConfigError(f"data.synthetic_size: {d.synthetic_size!r} is not one of "
                              f"{sorted(synthetic.SIZES)} nor TRAINxVAL videos per class (e.g. 24x8)")
        spec = synthetic.SizeSpec(int(train), int(val), 2, 2, 2, 2)  # the SSv2/Charades variants stay tiny
        synthetic.generate_with(d.root, seed, spec, workers)


def _synthetic_done(root: Path, seed: int) -> bool:
    from mgvideo.data import synthetic

    meta = root / "meta.json"  # written last, so it exists only for a complete set
    return meta.exists() and synthetic.matches(json.loads(meta.read_text()), str(root), seed)


def build_frame_cache(cfg: Config) -> FrameCache | None:
    """The run's decoded-frame cache (`data.cache`), sized for the largest clip any split asks for and
    bounded by `data.cache_max_gb`."""
    d = cfg.data
    mode = dataset_format(d.dataset).cache_default if d.cache == "auto" else d.cache
    if mode == "none":
        return None
    side = largest_short_side(d.crop, cfg.test.crop_size or d.crop)
    return FrameCache(cache_directory(mode, d.root, d.cache_dir), side, max_bytes=int(d.cache_max_gb * 1e9))


def build_video_store(cfg: Config) -> S.VideoStore | None:
    """The run's multi-resolution store (`data.store`), whose entries are keyed relative to `data.root`, or
    None: clips are then read from the originals. A store folder that does not exist is an error (a typo
    would otherwise silently read the originals), and so is one of an older layout (no index)."""
    d = cfg.data
    if not d.store:
        return None
    if not Path(d.store).is_dir():
        raise ConfigError(f"data.store: {d.store} is not a folder; make it with "
                          f"`mgvideo data prepare --config RECIPE LIST --root DIR --out {d.store}`")
    store = S.VideoStore(d.store, d.root)
    try:
        store.entries()  # here, once, rather than in every loader worker
    except ConfigError as err:
        raise ConfigError(str(err).replace("LIST", str(Path(d.root) / d.train_list), 1)) from None
    return store


def recipe_store_sides(cfg: Config, schedule: MultigridSchedule) -> list[int]:
    """The short sides a store needs for this recipe and its schedule (engine.builders.build_schedule):
    both ends of the scale jitter at every crop the schedule uses (the dataset's jitter,
    `sampling.scale_range`), and the test size."""
    from mgvideo.data.store import store_sides

    base = cfg.data.crop
    crops = sorted({shape.crop for stage in schedule.stages for _, shape in schedule.shapes(stage, 1)})
    jitter = (round(base * REFERENCE_JITTER[0]), round(base * REFERENCE_JITTER[1]))
    return store_sides(crops, base, jitter, cfg.multigrid.scale_jitter == "same_view",
                       extra=[cfg.test.crop_size or base])


def prepare_store(paths: Sequence[str], store: str, sides: Sequence[int], workers: int = 1,
                  max_bytes: int = 0, gop: int = S.GOP, log: Callable[[str], None] = print,
                  root: str | None = None) -> dict:
    """Transcode `paths` into `store`, keyed relative to `root` (`store.store_key`), with `workers`
    processes, skipping videos already there (resumable), and starting no video once the store's size plus
    one more video's (the mean so far) would pass `max_bytes` (0: no bound). An older store (no index) is
    indexed first, without transcoding. Then writes the index, merged with the one on disk (also when
    interrupted), and STORE/failed.json; returns counts, bytes and the failed videos."""
    os.makedirs(store, exist_ok=True)
    added = {} if S.read_index(store) is not None else S.migrate_entries(store, root)
    if added:
        log(f"store: indexed {len(added)} entries of an older layout under {root} (nothing transcoded)")
    jobs = {S.store_key(p, root): p for p in paths}  # one job per entry: a video listed twice is one
    outside = sum(os.path.isabs(key) for key in jobs) if root else 0
    if outside:
        log(f"store: {outside} videos lie outside {root}; their entries are keyed by absolute path and are "
            "found only where the videos have that path")
    summary = {"videos": len(paths), "done": 0, "kept": 0, "failed": [], "left_out": 0, "bytes": 0,
               "seconds": 0.0, "sides": sorted(sides), "gop": gop}
    failed: set[str] = set()

    def take(result: tuple[str, str, str, dict | str]) -> None:
        key, path, status, info = result
        if status == "failed":
            failed.add(key)
            summary["failed"].append({"path": path, "reason": info})
            log(f"store: cannot transcode {path}: {info} (training reads its original)")
            return
        added[key] = info
        summary[status] += 1
        summary["bytes"] += info["bytes"]
        summary["seconds"] += info["frames"] / info["fps"]

    try:
        todo = [(store, key, path, tuple(sides), gop) for key, path in jobs.items()]
        summary["left_out"] = _transcode_all(todo, workers, max_bytes, summary, take)
    finally:
        S.update_index(store, added, failed, root)  # what is done stays usable, even after an interrupt
    S.write_json(os.path.join(store, "failed.json"), summary["failed"])
    hours = summary["seconds"] / 3600
    summary["gb_per_hour"] = summary["bytes"] / 1e9 / hours if hours else 0.0
    return summary


def _transcode_all(jobs: list[tuple], workers: int, max_bytes: int, summary: dict,
                   take: Callable[[tuple], None]) -> int:
    """Run `_store_job` on `jobs` (here, or in `workers` processes), passing each result to `take`, until
    the bound stops them; returns how many were left out."""
    pending: set = set()

    def fits() -> bool:
        stored = summary["done"] + summary["kept"]
        mean = summary["bytes"] / stored if stored else 0
        return not max_bytes or summary["bytes"] + mean * (len(pending) + 1) <= max_bytes

    if workers <= 1:  # in this process
        for k, job in enumerate(jobs):
            if not fits():
                return len(jobs) - k
            take(_store_job(job))
        return 0
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for k, job in enumerate(jobs):
            # with a bound, nothing more starts before one video's size is known
            unknown = max_bytes and not summary["done"] + summary["kept"]
            while pending and (len(pending) >= 2 * max(1, workers) or unknown):
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in finished:
                    take(future.result())
                unknown = max_bytes and not summary["done"] + summary["kept"]
            if not fits():
                for future in pending:
                    take(future.result())
                return len(jobs) - k
            pending.add(pool.submit(_store_job, job))
        for future in pending:
            take(future.result())
    return 0


def _store_job(job: tuple[str, str, str, tuple[int, ...], int]) -> tuple[str, str, str, dict | str]:
    store, key, path, sides, gop = job
    return (key, path, *S.make_entry(store, key, path, sides, gop))


def fill_frame_cache(cfg: Config, cache: FrameCache, log: Callable[[str], None] = print) -> int:
    """Decode the training and validation videos into `cache` up front, with `data.workers` processes,
    so that training never waits on a first decode and the decoding time shows on its own line. Returns
    how many videos were stored."""
    d = cfg.data
    paths = [r.path for name in (d.train_list, d.val_list) for r in read_split(cfg, name).records
             if r.frame_paths is None]
    missing = cache.missing(paths)
    if not missing or cache._found_full(len(missing)):  # done: nothing to write, so no lock file either
        return 0
    try:
        cache.directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CacheError(f"frame cache: cannot create {cache.directory}: {err}") from err
    with locked(cache.directory / LOCK):
        return cache.fill(paths, max(1, resolve_workers(d.workers)), log)


def read_split(cfg: Config, list_name: str) -> Annotations:
    """Read one split's annotation file (`data.root / list_name`) with the dataset format's reader, given
    its labels file (`data.labels_file`, else the format's default) and its `data.*` options."""
    d = cfg.data
    root, fmt = Path(d.root), dataset_format(d.dataset)
    labels_name = d.labels_file or fmt.labels_default
    labels = root / labels_name if fmt.labels_option and labels_name else None
    options: dict = {option: getattr(d, key) for option, key in fmt.config_options}
    if labels is not None:
        options[fmt.labels_option] = labels
    check_data_paths(cfg, list_name, labels)
    annotations = fmt.reader(root / list_name, root, **options)
    if annotations.num_classes > d.num_classes:
        raise ConfigError(f"data.num_classes is {d.num_classes} but {root / list_name} has "
                          f"{annotations.num_classes} classes")
    annotations.num_classes = d.num_classes
    return annotations


def check_data_paths(cfg: Config, list_name: str, labels: Path | None) -> None:
    """One line naming the config key when `data.root`, a split's list or the labels file is missing
    (a recipe for a real dataset run before its data is in place)."""
    d = cfg.data
    root = Path(d.root)
    if not root.is_dir():
        raise ConfigError(f"data.root: {root} is not a directory ({d.dataset} videos and lists go there; "
                          "set data.root=DIR, see the README's 'Recipes and real datasets')")
    key = next((k for k in ("train_list", "val_list", "test_list") if getattr(d, k) == list_name), "list")
    if not (root / list_name).is_file():
        raise ConfigError(f"data.{key}: no such file: {root / list_name}")
    if labels is not None and not labels.is_file():
        raise ConfigError(f"data.labels_file: no such file: {labels}")
