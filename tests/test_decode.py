"""The PyAV reader: every container/codec pair, awkward streams, window decoding, decoder-side resize."""

import types

import av
import numpy as np
import pytest
from videos import (
    PAIRS,
    frame_of,
    write_bit_flipped,
    write_broken,
    write_gop_mp4,
    write_image,
    write_pair,
    write_truncated,
    write_video,
)

from mgvideo.data import decode
from mgvideo.data.decode import PyAVReader, open_video, scaled_size, select_backend, truncation
from mgvideo.errors import ConfigError, VideoDecodeError


def frames_of(clip: np.ndarray) -> list[int]:
    return [frame_of(f) for f in clip]


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_every_container_codec_pair_decodes_frame_exact(tmp_path, pair):
    path = write_pair(tmp_path, pair)
    with PyAVReader(str(path)) as reader:
        assert (reader.fps, reader.num_frames, reader.height, reader.width) == (25.0, 20, 48, 64)
        assert reader.duration == pytest.approx(0.8, abs=0.05)
        clip = reader.read(range(20))
        assert clip.shape == (20, 48, 64, 3) and clip.dtype == np.uint8
        assert frames_of(clip) == list(range(20))
        assert frames_of(reader.read([13, 2, 2, 19])) == [13, 2, 2, 19]


def test_this_ffmpeg_has_the_theora_decoder():
    # No theora encoder in this build, so ogv/theora files cannot be written here; the decoder must exist.
    assert "theora" in av.codecs_available
    assert av.Codec("theora", "r").name == "theora"


@pytest.mark.parametrize("pair", ["mkv/hevc", "webm/vp9", "ogv/vp8"])
def test_missing_frame_count_is_estimated(tmp_path, pair):
    path = write_pair(tmp_path, pair, frames=20)
    with av.open(str(path)) as container:
        assert container.streams.video[0].frames == 0  # the container really stores no count
    with PyAVReader(str(path)) as reader:
        assert reader.num_frames == 20
        assert frames_of(reader.read([0, 19])) == [0, 19]


def test_missing_average_rate_falls_back_to_guessed_rate(tmp_path):
    path = write_pair(tmp_path, "ogv/vp8")
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate is None
    with PyAVReader(str(path)) as reader:
        assert reader.fps == 25.0


def test_overstated_length_clamps_to_the_real_last_frame(tmp_path):
    with PyAVReader(str(write_video(tmp_path / "a.mp4", frames=20))) as reader:
        reader.num_frames = 40  # as if the container claimed twice the frames it holds
        assert frames_of(reader.read([18, 30, 39])) == [18, 19, 19]
        assert frames_of(reader.read([30, 39])) == [19, 19]  # nothing in the window: falls back
        assert reader.num_frames == 20


def test_variable_frame_rate_picks_frames_by_time(tmp_path):
    pts = [0, 40, 80, 120, 400, 440, 480, 520, 900, 940] + [1000 + 40 * i for i in range(10)]
    with PyAVReader(str(write_video(tmp_path / "vfr.mp4", frames=20, pts_ms=pts))) as reader:
        clip = reader.read(range(reader.num_frames))
        shown = frames_of(clip)
        times = np.arange(reader.num_frames) / reader.fps
        expected = [int(np.searchsorted(pts, t * 1000 + 500 / reader.fps, side="right") - 1) for t in times]
        assert shown == expected
        assert shown == sorted(shown) and len(set(shown)) < len(shown)  # the 280 ms gap repeats frame 3


@pytest.mark.parametrize("kwargs,shape", [
    ({"pix_fmt": "yuv444p", "width": 47, "height": 33}, (33, 47)),
    ({"codec": "libvpx-vp9", "width": 32, "height": 48}, (48, 32)),
    ({"codec": "ffv1", "pix_fmt": "gray", "gray": True}, (32, 48)),
    ({"pix_fmt": "yuv444p"}, (32, 48)),
    ({"audio": True}, (32, 48)),
    ({"rotation": 90}, (48, 32)),
])
def test_awkward_streams(tmp_path, kwargs, shape):
    path = write_video(tmp_path / ("v.mkv" if kwargs.get("codec") == "ffv1" else "v.mp4"), **kwargs)
    with PyAVReader(str(path)) as reader:
        assert reader.num_frames == 20
        clip = reader.read([0, 7, 19])
        assert clip.shape == (3, *shape, 3)
        assert frames_of(clip) == [0, 7, 19]
        assert np.abs(clip.astype(int) - clip[..., :1]).max() <= 3  # grey stays grey (channel order)


def test_decoder_resize_sets_the_short_side(tmp_path):
    landscape = write_video(tmp_path / "l.mp4", width=48, height=32)
    portrait = write_video(tmp_path / "p.mp4", width=32, height=48)
    with PyAVReader(str(landscape)) as a, PyAVReader(str(portrait)) as b:
        assert a.read([0, 5], short_side=16).shape == (2, 16, 24, 3)
        assert b.read([0, 5], short_side=16).shape == (2, 24, 16, 3)
        assert frames_of(a.read([4], short_side=20)) == [4]
    assert scaled_size(32, 48, 16) == (16, 24) and scaled_size(48, 32, 20) == (30, 20)


class CountingContainer:
    """Wraps a PyAV container and counts the frames its decoder produces."""

    def __init__(self, container):
        self.container, self.decoded = container, 0

    def decode(self, *args):
        for frame in self.container.decode(*args):
            self.decoded += 1
            yield frame

    def __getattr__(self, name):
        return getattr(self.container, name)


def test_decodes_only_the_window_and_converts_only_the_picked_frames(tmp_path, monkeypatch):
    path = write_video(tmp_path / "long.mkv", codec="mjpeg", pix_fmt="yuvj420p", frames=200, fps=25)
    converted = []
    original = PyAVReader._to_rgb
    monkeypatch.setattr(PyAVReader, "_to_rgb", lambda self, f, s: converted.append(1) or original(self, f, s))
    with PyAVReader(str(path)) as reader:
        reader._container = counting = CountingContainer(reader._container)
        assert frames_of(reader.read([150, 152, 154, 156])) == [level_index(i) for i in (150, 152, 154, 156)]
    assert counting.decoded <= 12  # seeks near frame 150 and stops after 156, never decodes all 200
    assert len(converted) == 4


def level_index(i: int) -> int:
    return i % 23  # videos.level repeats every 23 frames


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "garbage", "text", "too_short"])
def test_broken_files_raise_video_decode_error_naming_the_file(tmp_path, kind):
    files = write_broken(tmp_path, write_video(tmp_path / "good.mp4"))
    with pytest.raises(VideoDecodeError, match=files[kind].name):
        with open_video(str(files[kind])) as reader:
            reader.read([0, 1, 2])


def test_image_files_read_repeatedly(tmp_path):
    # a numbered name makes FFmpeg pick its image2 demuxer, which cannot seek back to the start
    with PyAVReader(str(write_image(tmp_path / "V-000001.jpg", 70))) as reader:
        assert reader.num_frames == 1
        assert frames_of(reader.read([0])) == [6] and frames_of(reader.read([0, 0], short_side=16)) == [6, 6]


def test_backend_selection_falls_back_cleanly():
    assert select_backend("auto", importable=lambda m: False) == "pyav"
    assert select_backend("auto", importable=lambda m: True) == "torchcodec"
    assert select_backend("pyav", importable=lambda m: True) == "pyav"
    with pytest.raises(ConfigError, match="torchcodec"):
        select_backend("torchcodec", importable=lambda m: False)
    with pytest.raises(ConfigError, match="data.backend"):
        select_backend("ffmpeg-cli")
    assert select_backend("auto") == ("torchcodec" if decode._importable("torchcodec.decoders") else "pyav")


def test_a_truncated_stream_reads_as_what_decodes_and_reports_the_counts(tmp_path):
    cut = write_truncated(write_gop_mp4(tmp_path / "good.mp4", frames=40), tmp_path / "cut.mp4", frame=15)
    with PyAVReader(str(cut)) as reader:
        assert reader.num_frames == reader.stated_frames == 40  # what the index says, before any decoding
        assert frames_of(reader.read([0, 3])) == [0, 3] and truncation(reader) is None  # not found yet
        assert frames_of(reader.read([38, 39])) == [14, 14]  # past the real end: its last frame
        assert reader.num_frames == 15 and reader.stated_frames == 40
        assert truncation(reader) == "truncated: container says 40 frames, 15 decode"
        assert frames_of(reader.read([5, 14, 30])) == [5, 14, 14]


def test_a_damaged_packet_is_skipped_and_noted_and_the_rest_decodes(tmp_path):
    good = write_gop_mp4(tmp_path / "good.mp4", frames=40, keyint=10)
    flipped = write_bit_flipped(good, tmp_path / "flipped.mp4", frame=15)
    with PyAVReader(str(flipped)) as reader:
        assert frames_of(reader.read([0, 13])) == [0, 13] and frames_of(reader.read([38])) == [38 % 23]
        assert not reader.errors  # a seek to the last keyframe group skips the damage
        clip = reader.read(range(40))
        assert len(reader.errors) == 1 and "Invalid data" in reader.errors[0]
        assert frames_of(clip[:15]) == list(range(15))
        assert frames_of(clip[20:]) == [i % 23 for i in range(20, 40)]  # resumed at the next keyframe
    with PyAVReader(str(flipped)) as reader:
        assert reader.scan() == 40 and len(reader.errors) == 1 and truncation(reader) is None
    with PyAVReader(str(good)) as reader:
        assert reader.scan() == 40 and not reader.errors


def test_truncation_tolerates_an_estimated_count_a_little_off():
    def found(stated, decoded):
        return truncation(types.SimpleNamespace(stated_frames=stated, num_frames=decoded))

    assert found(300, 294) is None and found(20, 18) is None  # within 2 % or 2 frames: an estimate
    assert found(300, 293) == "truncated: container says 300 frames, 293 decode"
    assert found(20, 17) is not None and found(75, 23) == "truncated: container says 75 frames, 23 decode"


@pytest.mark.parametrize("kwargs", [{}, {"pts_ms": [0, 40, 80, 200, 240, 280, 400, 440, 480, 520]},
                                    {"codec": "mjpeg", "pix_fmt": "yuvj420p"}])
def test_scan_measures_the_length_that_reads_see(tmp_path, kwargs):
    path = write_video(tmp_path / ("v.mkv" if "codec" in kwargs else "v.mp4"), frames=10, **kwargs)
    with PyAVReader(str(path)) as reader:
        stated = reader.stated_frames
        assert reader.scan() == stated and not reader.errors and truncation(reader) is None
        assert frames_of(reader.read([0])) == [0]  # still reads after a scan
