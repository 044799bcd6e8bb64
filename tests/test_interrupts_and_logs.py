"""Ctrl-C inside a checkpoint write is a plain interrupt that leaves no temp file; a loader worker's warning
never lands on the progress bar's line."""

import io
import logging

import pytest
import torch

from mgvideo.engine import checkpoint
from mgvideo.engine.runlog import OffTheBar


def test_ctrl_c_inside_torch_save_is_a_plain_interrupt_and_leaves_no_temp_file(tmp_path, monkeypatch):
    # torch.save's zip writer turns a KeyboardInterrupt into "unexpected pos" on its way out.
    def interrupted_save(state, f):
        f.write(b"PK\x03\x04 partial")
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64 vs 0") from None

    monkeypatch.setattr(torch, "save", interrupted_save)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save({"w": torch.zeros(2)}, tmp_path / "checkpoints" / "last.pt")
    assert list((tmp_path / "checkpoints").iterdir()) == []


def test_a_failed_write_still_raises_its_own_error(tmp_path, monkeypatch):
    def broken_save(state, f):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save({"w": torch.zeros(2)}, tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


def test_stale_temp_files_are_found_and_removed(tmp_path):
    (tmp_path / ".last.pt.tmp4242").write_bytes(b"half")
    (tmp_path / "last.pt").write_bytes(b"kept")
    removed = checkpoint.remove_stale_temps(tmp_path)
    assert [p.name for p in removed] == [".last.pt.tmp4242"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("stream, start", [(io.StringIO(), "\n"), (FakeTerminal(), "\r\x1b[2K")])
def test_a_warning_starts_its_own_line(stream, start):
    handler = OffTheBar(stream)
    record = logging.LogRecord("mgvideo.data", logging.WARNING, __file__, 1, "skipping unreadable video %s",
                               ("a.mp4",), None)
    stream.write(" 40%|####      | 8/20 [00:01<00:02]")  # the bar, with no newline
    handler.emit(record)
    assert stream.getvalue().endswith(start + "skipping unreadable video a.mp4\n")
