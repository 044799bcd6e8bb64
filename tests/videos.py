"""Writes tiny test videos with PyAV. Frame i is a flat grey of level `level(i)`, so a decoded frame tells
which source frame it came from even after lossy coding."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

# (container extension, encoder, pixel format) for every pair the data pipeline must read.
PAIRS = {
    "mp4/h264": ("mp4", "libx264", "yuv420p"),
    "mkv/hevc": ("mkv", "libx265", "yuv420p"),
    "webm/vp9": ("webm", "libvpx-vp9", "yuv420p"),
    "mkv/av1": ("mkv", "libsvtav1", "yuv420p"),
    "mp4/av1": ("mp4", "libsvtav1", "yuv420p"),
    "avi/mpeg4": ("avi", "mpeg4", "yuv420p"),
    "avi/mjpeg": ("avi", "mjpeg", "yuvj420p"),
    "mkv/mjpeg": ("mkv", "mjpeg", "yuvj420p"),
    "mov/prores": ("mov", "prores_ks", "yuv422p10le"),
    "ogv/vp8": ("ogv", "libvpx", "yuv420p"),  # this FFmpeg build has a theora decoder but no encoder
}
QUIET = {"libx265": {"x265-params": "log-level=none:pools=none"},
         "libsvtav1": {"svtav1-params": "log-level=0"}}


def level(i: int) -> int:
    """The grey level of source frame i (distinct for the first 22 frames)."""
    return 10 + 10 * (i % 23)


def frame_of(rgb: np.ndarray) -> int:
    """Which source frame a decoded (H, W, 3) frame shows."""
    return int(round((float(rgb.mean()) - 10) / 10))


def write_video(path: str | Path, *, codec: str = "libx264", frames: int = 20, width: int = 48,
                height: int = 32, fps: int = 25, pix_fmt: str = "yuv420p", audio: bool = False,
                pts_ms: list[int] | None = None, rotation: int | None = None, gray: bool = False) -> Path:
    """Write a video; `pts_ms` gives per-frame timestamps (variable frame rate)."""
    if codec == "libx265" and width < 64:  # this build's x265 corrupts the heap below one 64-pixel CTU
        raise ValueError("libx265 needs width >= 64")
    path = Path(path)
    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps, options=QUIET.get(codec, {}))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        if pts_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation is not None:
            stream.set_display_rotation(rotation)
        sound = out.add_stream("aac", rate=16000) if audio else None
        for i in range(frames):
            rgb = np.full((height, width, 3), level(i), np.uint8)
            pixels, fmt = (rgb[..., 0], "gray") if gray else (rgb, "rgb24")
            frame = av.VideoFrame.from_ndarray(pixels, format=fmt)
            if pts_ms is not None:
                frame.pts, frame.time_base = pts_ms[i], Fraction(1, 1000)
            out.mux(stream.encode(frame))
            if sound is not None:
                samples = np.zeros((1, 16000 // fps), np.float32)
                chunk = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 16000, i * (16000 // fps)
                out.mux(sound.encode(chunk))
        out.mux(stream.encode())
        if sound is not None:
            out.mux(sound.encode())
    return path


def write_pair(directory: Path, name: str, **kwargs) -> Path:
    """Write the container/codec pair `name` (a key of PAIRS), 64x48 unless told otherwise."""
    ext, codec, pix_fmt = PAIRS[name]
    kwargs = {"width": 64, "height": 48, **kwargs}
    return write_video(directory / f"{name.replace('/', '_')}.{ext}", codec=codec, pix_fmt=pix_fmt, **kwargs)


def write_broken(directory: Path, good: Path) -> dict[str, Path]:
    """A set of bad files next to a good one: missing, empty, truncated, garbage, not a video, too short."""
    data = good.read_bytes()
    files = {"missing": directory / "missing.mp4", "empty": directory / "empty.mp4",
             "truncated": directory / "truncated.mp4", "garbage": directory / "garbage.mkv",
             "text": directory / "notes.avi", "too_short": directory / "short.mp4"}
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(data[: len(data) // 3])
    files["garbage"].write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    files["text"].write_text("this is not a video\n")
    files["too_short"].write_bytes(data[:200])
    return files


def write_image(path: str | Path, value: int, width: int = 48, height: int = 32) -> Path:
    """A one-frame JPEG of flat grey `value` (as Charades stores frames)."""
    path = Path(path)
    with av.open(str(path), "w", format="image2") as out:
        stream = out.add_stream("mjpeg", rate=1)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuvj420p"
        frame = av.VideoFrame.from_ndarray(np.full((height, width, 3), value, np.uint8), format="rgb24")
        out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return path


def write_gop_mp4(path: str | Path, frames: int = 40, keyint: int = 10) -> Path:
    """An h264 mp4 with its index up front (faststart, as cameras and web videos write it), no B-frames and
    a keyframe every `keyint` frames, so that packet k holds frame k and a seek skips earlier damage."""
    path = Path(path)
    params = f"bframes=0:keyint={keyint}:min-keyint={keyint}:scenecut=0"
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("libx264", rate=25, options={"x264-params": params})
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for i in range(frames):
            rgb = np.full((48, 64, 3), level(i), np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode())
    return path


def _packet_start(path: Path, frame: int) -> int:
    with av.open(str(path)) as container:
        return [p.pos for p in container.demux(video=0) if p.size][frame]


def write_truncated(good: Path, out: str | Path, frame: int) -> Path:
    """`good` (from write_gop_mp4) cut off where frame `frame` starts: its index still states every frame,
    but only the first `frame` decode."""
    out = Path(out)
    out.write_bytes(good.read_bytes()[: _packet_start(good, frame)])
    return out


def write_bit_flipped(good: Path, out: str | Path, frame: int) -> Path:
    """`good` (from write_gop_mp4) with the first 4 bytes of frame `frame` inverted, so that it fails to
    decode; the file's length and index are intact."""
    data, start = bytearray(good.read_bytes()), _packet_start(good, frame)
    data[start: start + 4] = bytes(b ^ 0xFF for b in data[start: start + 4])
    out = Path(out)
    out.write_bytes(bytes(data))
    return out
