"""Data preparation (data/prepare.py): the synthetic set generated once, in one place; the frame cache
filled before the process group starts, so a slow preparation never times out the other ranks; an
unwritable cache stops `mgvideo train` with the I/O error; the lock works where flock does not, and work
found done takes no lock."""

import errno
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from test_distributed import free_port
from videos import write_video

from mgvideo.cli import main
from mgvideo.config import load_config
from mgvideo.data import prepare, synthetic

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "synthetic" / "tiny.yaml"
SMALL = REPO / "runs" / "data" / "synthetic_small"


@pytest.fixture(scope="module")
def small():
    """The small synthetic set (generated here on a fresh clone)."""
    prepare.ensure_synthetic_data(load_config(TINY, [f"data.root={SMALL}"]))
    return SMALL


def test_the_synthetic_set_is_generated_once_for_a_synthetic_run(tmp_path, monkeypatch):
    calls = []

    def fake_generate(root, seed, spec, workers=None):
        calls.append((root, seed, spec.train_per_class, spec.val_per_class))
        Path(root, "meta.json").write_text(json.dumps({"version": synthetic.VERSION, "seed": seed}))

    monkeypatch.setattr(synthetic, "generate_with", fake_generate)
    cfg = load_config(TINY, [f"data.root={tmp_path / 'set'}", "data.synthetic_size=3x1", "data.cache=none"])
    prepare.prepare_data(cfg)
    prepare.prepare_data(cfg)  # complete now: nothing to do
    assert calls == [(str(tmp_path / "set"), 0, 3, 1)]
    real = load_config(None, [f"data.root={tmp_path / 'kinetics'}", "data.synthetic_size=3x1"])
    prepare.prepare_data(real)  # not synthetic: never generated, and no cache by default
    assert calls == [(str(tmp_path / "set"), 0, 3, 1)] and not (tmp_path / "kinetics").exists()


def test_the_lock_makes_a_second_preparer_wait(tmp_path):
    order = []

    def prepare_slowly(name):
        with prepare.locked(tmp_path / "lock"):
            order.append(f"{name} in")
            time.sleep(0.3)
            order.append(f"{name} out")

    first = threading.Thread(target=prepare_slowly, args=("a",))
    first.start()
    time.sleep(0.1)
    prepare_slowly("b")
    first.join()
    assert order == ["a in", "a out", "b in", "b out"]


@pytest.fixture
def no_flock(monkeypatch):
    """A file system without flock (as some network file systems answer)."""
    def refuse(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(prepare.fcntl, "flock", refuse)


def hold_in_thread(lock: Path) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """A thread that takes `lock`, sets `inside`, and keeps it until `release` is set."""
    inside, release = threading.Event(), threading.Event()

    def hold():
        with prepare.locked(lock):
            inside.set()
            release.wait()

    thread = threading.Thread(target=hold, daemon=True)
    thread.start()
    return thread, inside, release


def test_without_flock_a_lock_file_makes_a_second_preparer_wait(tmp_path, no_flock):
    lock, held = tmp_path / "lock", tmp_path / "lock.held"
    first, inside, release = hold_in_thread(lock)
    assert inside.wait(10)
    assert held.read_text() == f"{socket.gethostname()} {os.getpid()}\n"
    second, second_inside, second_release = hold_in_thread(lock)
    second.join(1.0)
    assert not second_inside.is_set()  # waits on the lock file
    release.set()
    assert second_inside.wait(10)  # and takes it once released
    second_release.set()
    second.join(10)
    first.join(10)
    assert not held.exists()


def test_a_lock_file_whose_holder_is_gone_or_silent_is_broken(tmp_path, no_flock, monkeypatch):
    lock, held = tmp_path / "lock", tmp_path / "lock.held"
    ended = subprocess.Popen([sys.executable, "-c", ""])
    ended.wait()
    held.write_text(f"{socket.gethostname()} {ended.pid}\n")  # this host, its process gone
    with prepare.locked(lock):
        assert held.read_text() == f"{socket.gethostname()} {os.getpid()}\n"
    held.write_text("another-host 1\n")  # another host's, untouched for longer than STALE_S
    long_ago = time.time() - prepare.STALE_S - 60
    os.utime(held, (long_ago, long_ago))
    with prepare.locked(lock):
        pass
    held.write_text("another-host 1\n")  # a live holder elsewhere: waited for
    waiter, inside, release = hold_in_thread(lock)
    waiter.join(1.0)
    assert not inside.is_set()
    held.unlink()
    assert inside.wait(10)
    release.set()
    waiter.join(10)


def test_a_held_lock_file_is_kept_fresh(tmp_path, no_flock, monkeypatch):
    monkeypatch.setattr(prepare, "HEARTBEAT_S", 0.01)
    held = tmp_path / "lock.held"
    with prepare.locked(tmp_path / "lock"):
        os.utime(held, (1, 1))
        for _ in range(1000):  # until the holder's heartbeat touches it
            if held.stat().st_mtime > 1:
                break
            time.sleep(0.01)
        assert held.stat().st_mtime > 1


def test_a_frame_cache_found_done_or_full_takes_no_lock(tmp_path, monkeypatch):
    for i in range(2):
        write_video(tmp_path / f"v{i}.mp4", frames=10)
    (tmp_path / "train.csv").write_text("v0.mp4 0\nv1.mp4 1\n")
    (tmp_path / "val.csv").write_text("v1.mp4 1\n")
    cfg = load_config(None, [f"data.root={tmp_path}", "data.num_classes=2", "data.cache=disk",
                             "data.cache_max_gb=0.000000001", "data.workers=0"])
    cache = prepare.build_frame_cache(cfg)
    assert prepare.fill_frame_cache(cfg, cache, log=lambda m: None) == 0  # nothing fits: marked full

    def no_lock(path):
        raise AssertionError(f"locked {path}: a read-only folder could not")

    monkeypatch.setattr(prepare, "locked", no_lock)
    assert prepare.fill_frame_cache(cfg, prepare.build_frame_cache(cfg), log=lambda m: None) == 0


def test_train_stops_with_the_io_error_of_an_unwritable_cache(small, tmp_path, capsys):
    (tmp_path / "file").write_text("a regular file: nothing can be created under it, not even by root\n")
    code = main(["train", str(TINY), "--out", str(tmp_path / "run"), f"data.root={small}", "data.cache=disk",
                 f"data.cache_dir={tmp_path / 'file' / 'frames'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith("mgvideo train: error: frame cache: cannot create ") and "Not a directory" in err


# Each rank builds a run as `mgvideo train` does, with a 2 s collective timeout; the frame cache fill (done
# by whichever rank takes the lock first) is made 5 s slower. A rank that waited at a barrier would time out.
# torch._dynamo (which the optimizer imports, for seconds) is imported first, so that the ranks reach
# build_run's barrier close together on a busy machine.
CHILD = textwrap.dedent("""
    import sys, time
    from datetime import timedelta
    from pathlib import Path
    import torch._dynamo
    from mgvideo.config import load_config
    from mgvideo.data.cache import FrameCache
    from mgvideo.engine import distributed as D
    from mgvideo.engine.run import build_run

    D._TIMEOUT = timedelta(seconds=2)
    fill = FrameCache.fill

    def slow_fill(self, paths, workers=1, log=print):
        if self.missing(paths):
            time.sleep(5)
        return fill(self, paths, workers, log)

    FrameCache.fill = slow_fill
    root, cache, out = sys.argv[1:4]
    cfg = load_config("configs/synthetic/tiny.yaml", [f"data.root={root}", "data.cache=disk",
                                                      f"data.cache_dir={cache}", "data.workers=0"])
    run = build_run(cfg, Path(out))
    print("ready", run.info.rank, len(list(Path(cache).glob("*.npy"))), flush=True)
    D.shutdown(run.info)
""")


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.timeout(120)
def test_a_slow_preparation_does_not_time_out_the_other_rank(small, tmp_path):
    port = free_port()
    procs = []
    for rank in range(2):
        env = {**os.environ, "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1"}
        procs.append(subprocess.Popen(
            [sys.executable, "-c", CHILD, str(small), str(tmp_path / "frames"), str(tmp_path / "run")],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    results = [p.communicate(timeout=100) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err[-3000:]
    ready = sorted(line.split()[1:] for out, _ in results for line in out.splitlines() if line[:5] == "ready")
    stored = len(list((tmp_path / "frames").glob("*.npy")))
    assert stored == 60 and ready == [["0", "60"], ["1", "60"]]  # each rank saw the whole cache
