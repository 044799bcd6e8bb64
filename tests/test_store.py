"""The multi-resolution store: `mgvideo data prepare` end to end, `data.store` reads, frame-exact sparse
decoding, non-reference frame skipping, and what happens to videos that fail or change."""

import json
import os
from pathlib import Path

import av
import numpy as np
import pytest

from mgvideo.data.annotations import read_kinetics
from mgvideo.data.datasets import VideoClipDataset
from mgvideo.data.decode import PyAVReader
from mgvideo.data.store import VideoStore, store_entry, store_sides
from mgvideo.multigrid.schedule import ClipShape

pytestmark = pytest.mark.slow  # transcodes a few videos into five sizes (about 10 s on a quiet core)

PSNR_MIN = 30.0  # dB: a store clip against the original's; measured 32-38 here; the next frame gives 23


def textured_video(path: Path, frames: int = 40, width: int = 160, height: int = 120, seed: int = 0) -> Path:
    """A smooth pattern that drifts right five pixels a frame (so a wrong frame or region shows), coded by
    x264 with its default B-frames."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width + 5 * frames].astype(np.float32)
    phases = rng.uniform(0, 6.28, 3)
    waves = [96 + 80 * np.sin(xx / (12 + 4 * c) + yy / (16 - 3 * c) + phases[c]) for c in range(3)]
    base = np.stack(waves, -1)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            rgb = np.clip(base[:, 5 * i:5 * i + width], 0, 255).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    return path


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 10 * np.log10(255 ** 2 / max(mse, 1e-10))


RECIPE = """data: {dataset: kinetics, root: ROOT, num_classes: 2, frames: 8, crop: 64, sampling_rate: 2}
model: {name: r3d_tiny}
solver: {batch_size: 2, max_epoch: 4, steps: [0, 3]}
test: {crop_size: 64}
"""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):  # `data prepare --workers 2`: the process pool's path
    """Three good videos and one broken file, a recipe, and a store prepared by the command line."""
    from mgvideo.cli import main

    root = tmp_path_factory.mktemp("store")
    for i in range(3):
        textured_video(root / f"v{i}.mp4", seed=i, width=160 + 16 * i)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000))
    (root / "train.csv").write_text("v0.mp4 0\nv1.mp4 1\nbroken.mp4 0\nv2.mp4 1\n")
    (root / "recipe.yaml").write_text(RECIPE.replace("ROOT", str(root)))
    argv = ["data", "prepare", str(root / "train.csv"), "--config", str(root / "recipe.yaml"),
            "--out", str(root / "store"), "--workers", "2", "--json"]
    return root, argv, main(argv)


def shapes():
    """The recipe's coarsest and full training shapes (rate jitter as the schedule gives it)."""
    coarse = ClipShape(frames=2, crop=32, min_rate=2, max_rate=8, base_crop=64, stage_batch=8, stage=0,
                       slot=0)
    full = ClipShape(frames=8, crop=64, min_rate=2, max_rate=2, base_crop=64, stage_batch=2, stage=3,
                     slot=2)
    return coarse, full


def test_prepare_names_and_counts_a_bad_video_and_stores_the_others(dataset, capsys):
    root, _, code = dataset
    assert code == 1  # a video failed, as `data check` exits 1 on bad rows
    failed = json.loads((root / "store" / "failed.json").read_text())
    assert [Path(f["path"]).name for f in failed] == ["broken.mp4"]
    store = VideoStore(str(root / "store"), str(root))
    assert store.open(str(root / "broken.mp4")) is None
    entries = [store.open(str(root / f"v{i}.mp4")) for i in range(3)]
    # both ends of the recipe's jitter ([73, 91] at the base crop 64, its low end scaled down at smaller
    # crops) at every crop of its schedule, and the test size; the video's own short side (120) is above all
    from mgvideo.config import load_config
    from mgvideo.engine.builders import build_schedule

    schedule = build_schedule(load_config(str(root / "recipe.yaml")))
    crops = sorted({s.crop for st in schedule.stages for _, s in schedule.shapes(st, 1)})
    assert crops[0] == 32 and crops[-1] == 64
    assert entries[0].sides == store_sides(crops, 64, (73, 91), extra=[64])
    assert entries[0].sides[0] == 36 and entries[0].sides[-1] == 91
    assert all(e.num_frames == 40 and e.fps == 25 for e in entries)


def test_prepare_resumes_and_respects_the_disk_bound(dataset, tmp_path, capsys):
    from mgvideo.cli import main

    root, argv, _ = dataset
    copy = next((root / "store").glob("*/36.mp4"))
    before = copy.stat().st_mtime_ns
    capsys.readouterr()
    assert main(argv) == 1
    summary = json.loads(capsys.readouterr().out)
    assert (summary["done"], summary["kept"], len(summary["failed"])) == (0, 3, 1)
    assert copy.stat().st_mtime_ns == before  # not transcoded again
    assert summary["bytes"] > 0 and summary["gb_per_hour"] > 0
    bounded = argv[:argv.index("--out")] + ["--out", str(tmp_path / "small"), "--max-gb", "0.00001",
                                            "--workers", "1", "--json"]
    main(bounded)
    small = json.loads(capsys.readouterr().out)
    # the first video (~60 kB) passes the 10 kB bound already: nothing else starts
    assert (small["done"], small["left_out"]) == (1, 3) and small["bytes"] > 10_000


def test_a_clip_from_the_store_shows_the_originals_frames_and_region(dataset):
    root, _, _ = dataset
    annotations = read_kinetics(root / "train.csv")
    store = VideoStore(str(root / "store"), str(root))
    for shape in shapes():
        plain = VideoClipDataset(annotations, shape, seed=3)
        stored = VideoClipDataset(annotations, shape, seed=3, store=store)
        for item in range(4):
            a, b = plain[(item, shape)], stored[(item, shape)]
            assert a.index == b.index and b.clip.shape == a.clip.shape
            if a.index == 2:
                continue  # the broken video: both substituted the same way
            value = psnr(a.clip.numpy(), b.clip.numpy())
            assert value >= PSNR_MIN, f"item {item} at {shape.frames}x{shape.crop}: PSNR {value:.1f} dB"
    # and a wrong frame would be caught: the next frame of the same video is far below the threshold
    with PyAVReader(str(root / "v0.mp4")) as reader:
        assert psnr(reader.read([10]), reader.read([11])) < 25


def test_coarse_clips_decode_a_smaller_copy(dataset):
    root, _, _ = dataset
    video = VideoStore(str(root / "store"), str(root)).open(str(root / "v0.mp4"))
    video.read([0, 8, 16], 36)
    assert video.last_side == 36
    video.read([0, 8, 16], 80)
    assert video.last_side == 91  # the smallest copy that covers 80
    video.read([0], 150)
    assert video.last_side == 91  # nothing covers 150: the largest copy (the original, too, is enlarged)


def test_a_video_the_store_lacks_or_that_changed_is_read_from_its_original(dataset, tmp_path):
    root, _, _ = dataset
    store = VideoStore(str(root / "store"), str(root))
    late = textured_video(tmp_path / "late.mp4", seed=9)
    assert store.open(str(late)) is None
    changed = tmp_path / "changed.mp4"  # outside the root: keyed by its absolute path
    changed.write_bytes((root / "v0.mp4").read_bytes())
    store_entry(str(root / "store"), str(changed), [37], root=str(root))
    assert VideoStore(str(root / "store"), str(root)).open(str(changed)) is not None
    changed.write_bytes((root / "v1.mp4").read_bytes())  # edited in place (a reader checks once)
    assert VideoStore(str(root / "store"), str(root)).find(str(changed)) == (None, "stale")
    (tmp_path / "list.csv").write_text(f"{late} 0\n")
    coarse, _ = shapes()
    plain = VideoClipDataset(read_kinetics(tmp_path / "list.csv"), coarse, seed=1)
    stored = VideoClipDataset(read_kinetics(tmp_path / "list.csv"), coarse, seed=1, store=store)
    assert np.array_equal(plain[(0, coarse)].clip.numpy(), stored[(0, coarse)].clip.numpy())


def test_sparse_gop_decoding_gives_the_frames_a_full_decode_gives(tmp_path):
    src = textured_video(tmp_path / "v.mp4", frames=30)
    store_entry(str(tmp_path / "s"), str(src), [48], gop=4, root=str(tmp_path))
    video = VideoStore(str(tmp_path / "s"), str(tmp_path)).open(str(src))
    copy = next((tmp_path / "s").glob("*/48.mp4"))
    indices = [1, 6, 11, 13, 22, 29]
    with PyAVReader(str(copy)) as full:  # sparse_gop 0: every frame of the span decoded
        expected = full.read(indices, 48)
    assert np.array_equal(video.read(indices, 48), expected)


def test_skipping_unpicked_non_reference_frames_changes_no_picked_frame(tmp_path):
    src = textured_video(tmp_path / "b.mp4", frames=40)
    with av.open(str(src)) as container:  # the video has non-reference B-frames to skip
        stream = container.streams.video[0]
        stream.codec_context.skip_frame = "NONREF"
        assert sum(1 for _ in container.decode(stream)) < 40
    for indices in ([0, 7, 14, 21, 28, 35], [3, 5, 7, 9], [39, 2, 20]):
        with PyAVReader(str(src)) as skipping, PyAVReader(str(src)) as plain:
            assert skipping.skip_nonref
            plain.skip_nonref = False
            assert np.array_equal(skipping.read(indices), plain.read(indices))


def test_training_reads_the_store_named_by_data_store(dataset):
    from mgvideo.config import load_config
    from mgvideo.data.prepare import build_video_store
    from mgvideo.errors import ConfigError

    root, _, _ = dataset
    cfg = load_config(str(root / "recipe.yaml"), [f"data.store={root / 'store'}"])
    assert isinstance(build_video_store(cfg), VideoStore)
    assert build_video_store(load_config(str(root / "recipe.yaml"))) is None
    with pytest.raises(ConfigError, match="data.store"):
        build_video_store(load_config(str(root / "recipe.yaml"), [f"data.store={root / 'nope'}"]))
