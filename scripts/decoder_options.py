"""Decoder options on one Kinetics-like video (README, "Decoder options"): PyAV's thread types and counts and
skip_frame settings for a full decode, and the store's copy formats (GOP, CRF, x264's fastdecode tune) for
coarse (T=8, rate 2-8, crop 112) and full (T=32, rate 2, crop 224) clips. Times are CPU time of this thread
for the single-threaded rows, wall time for the threaded ones (their work runs in other threads).

    OMP_NUM_THREADS=1 python scripts/decoder_options.py /work/data20/k4/videos/000000.mp4 /tmp/variants
"""

from __future__ import annotations

import os
import sys
import time

import av
import numpy as np

from mgvideo.data import sampling as S
from mgvideo.data import store as st
from mgvideo.data.decode import PyAVReader


def full_decode(path: str, skip: str, thread_type: str, threads: int) -> tuple[int, float]:
    clock = time.thread_time if threads == 1 else time.perf_counter
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type, stream.codec_context.thread_count = thread_type, threads
        stream.codec_context.skip_frame = skip
        began = clock()
        count = sum(1 for _ in container.decode(stream))
        return count, 1e3 * (clock() - began)


def store_variant(src: str, out: str, gop: int, crf: int, fastdecode: bool) -> st.VideoStore:
    if not os.path.exists(out):
        plain = st._encoder

        def encoder(container, width, height, fps, g):
            stream = plain(container, width, height, fps, g)
            tune = {"tune": "fastdecode"} if fastdecode else {}
            stream.options = {**stream.options, "crf": str(crf), **tune}
            return stream

        st._encoder = encoder
        try:
            st.store_entry(out, src, [128, 181, 224, 256], gop=gop)
        finally:
            st._encoder = plain
    return st.VideoStore(out, os.path.dirname(src))


def clip_ms(open_reader, clips) -> float:
    began = time.thread_time()
    for indices, side in clips:
        reader = open_reader()
        reader.read(indices, side)
        reader.close()
    return 1e3 * (time.thread_time() - began) / len(clips)


def main(src: str, scratch: str) -> None:
    print("full decode of 300 frames: skip_frame, thread type, threads -> frames decoded, ms")
    for skip in ("DEFAULT", "NONREF"):
        for thread_type, threads in (("NONE", 1), ("SLICE", 2), ("FRAME", 2), ("AUTO", 0)):
            full_decode(src, skip, thread_type, threads)  # warm
            count, ms = full_decode(src, skip, thread_type, threads)
            print(f"  {skip:8} {thread_type:6} {threads}: {count} frames, {ms:.0f} ms")
    rng = np.random.default_rng(0)
    coarse = [(S.random_clip_indices(rng, 300, 8, 2, 8), S.random_short_side(rng, 112, 224, (256, 320)))
              for _ in range(30)]
    full = [(S.random_clip_indices(rng, 300, 32, 2, 2), S.random_short_side(rng, 224, 224, (256, 320)))
            for _ in range(10)]
    print("reading clips (CPU ms per clip, coarse / full) and the copies' size for 10 s of video")
    print(f"  original (GOP 32, B-frames): {clip_ms(lambda: PyAVReader(src), coarse):.1f} / "
          f"{clip_ms(lambda: PyAVReader(src), full):.1f}")
    for gop, crf, fast in ((1, 23, False), (4, 23, False), (8, 23, False), (1, 18, False), (1, 23, True)):
        name = f"gop{gop}_crf{crf}{'_fastdecode' if fast else ''}"
        store = store_variant(src, os.path.join(scratch, name), gop, crf, fast)
        size = store.open(src).meta["bytes"]
        print(f"  store {name}: {clip_ms(lambda s=store: s.open(src), coarse):.1f} / "
              f"{clip_ms(lambda s=store: s.open(src), full):.1f}, {size / 1e6:.2f} MB")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
