"""Data preparation (data/prepare.py): the synthetic set generated once, in one place; the frame cache
filled before the process group starts, so a slow preparation never times out the other ranks; an
unwritable cache stops `mgvideo train` with the I/O error."""

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from test_distributed import free_port

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

    def fake_generate(root, seed, spec):
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
