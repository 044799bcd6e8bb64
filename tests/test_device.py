"""Backend settings of a run. CUDA: TF32 readable through torch's legacy and new precision APIs alike.
CPU: glibc keeps freed memory for reuse.

The flags are process-wide settings that need no GPU, so these tests run on the CPU; a fixture puts
every flag back as it found it, so that no other test sees TF32.
"""

import platform
import sys

import pytest
import torch

import mgvideo.engine.device as device_module
from mgvideo.engine.device import (
    M_MMAP_THRESHOLD,
    M_TRIM_THRESHOLD,
    MALLOC_ENV,
    configure_device,
    enable_tf32,
    keep_freed_memory,
)

B = torch.backends
# The new API's (backend, op) settings, parents before children, so that restoring them in this order
# writes each one explicitly.
NEW_API = {"generic": B, "cudnn": B.cudnn, "cudnn.conv": B.cudnn.conv, "cudnn.rnn": B.cudnn.rnn,
           "cuda.matmul": B.cuda.matmul, "mkldnn": B.mkldnn, "mkldnn.matmul": B.mkldnn.matmul,
           "mkldnn.conv": B.mkldnn.conv, "mkldnn.rnn": B.mkldnn.rnn}


def snapshot() -> dict:
    """Every precision flag, legacy and new, and cuDNN's benchmark flag."""
    return {"legacy matmul": torch.get_float32_matmul_precision(), "legacy cudnn": B.cudnn.allow_tf32,
            "benchmark": B.cudnn.benchmark, **{k: v.fp32_precision for k, v in NEW_API.items()}}


@pytest.fixture
def precision_flags():
    """Restore the flags after the test: the legacy setters first (they write the new settings too),
    then each new setting as it was."""
    saved = snapshot()
    yield saved
    torch.set_float32_matmul_precision(saved["legacy matmul"])
    B.cudnn.allow_tf32, B.cudnn.benchmark = saved["legacy cudnn"], saved["benchmark"]
    for key, holder in NEW_API.items():
        holder.fp32_precision = saved[key]
    assert snapshot() == saved


def assert_tf32_everywhere() -> None:
    """Every reader, legacy and new, says TF32 (a legacy reader raises when the two records disagree)."""
    assert torch.get_float32_matmul_precision() == "high"  # Inductor's autotuning and Lightning read this
    assert B.cuda.matmul.allow_tf32 and B.cudnn.allow_tf32
    assert B.cuda.matmul.fp32_precision == B.cudnn.conv.fp32_precision == B.cudnn.rnn.fp32_precision == "tf32"


def test_a_cuda_device_gets_tf32_readable_through_both_apis(precision_flags):
    torch.set_float32_matmul_precision("highest")  # torch's default, whatever an earlier test left
    before = snapshot()
    configure_device(torch.device("cpu"))
    assert snapshot() == before  # the CPU is left alone
    configure_device(torch.device("cuda"))  # backend flags only: no GPU is needed to set them
    assert_tf32_everywhere()
    assert B.cudnn.benchmark


@pytest.mark.parametrize("before", ["new API only", "ieee by the new API", "medium", "legacy off"])
def test_enable_tf32_agrees_whatever_was_set_before(precision_flags, before):
    if before == "new API only":  # what configure_device used to do: the legacy readers then raised
        B.cuda.matmul.fp32_precision = B.cudnn.conv.fp32_precision = "tf32"
    elif before == "ieee by the new API":
        B.fp32_precision = B.cuda.matmul.fp32_precision = B.cudnn.conv.fp32_precision = "ieee"
    elif before == "medium":  # what Lightning suggests; oneDNN matmuls then take bf16
        torch.set_float32_matmul_precision("medium")
    else:
        B.cuda.matmul.allow_tf32 = B.cudnn.allow_tf32 = False
    enable_tf32()
    assert_tf32_everywhere()


class RecordingLibc:
    """A C library stand-in: records mallopt calls and answers as glibc does (1: done)."""

    def __init__(self, answer: int = 1) -> None:
        self.calls: list[tuple[int, int]] = []
        self.answer = answer

    def mallopt(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.answer


def test_the_cpu_keeps_freed_memory_unless_the_user_set_malloc(monkeypatch):
    for name in MALLOC_ENV:
        monkeypatch.delenv(name, raising=False)
    libc = RecordingLibc()
    assert keep_freed_memory(libc)
    # glibc's largest fixed mapping threshold (which also stops it from moving) and a heap that keeps its top
    assert libc.calls == [(M_MMAP_THRESHOLD, 32 * 2**20), (M_TRIM_THRESHOLD, 2**31 - 1)]
    assert not keep_freed_memory(RecordingLibc(answer=0))  # refused: reported as not applied
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "0")
    untouched = RecordingLibc()
    assert not keep_freed_memory(untouched) and untouched.calls == []


def test_a_cpu_run_applies_it_to_this_process(monkeypatch, precision_flags):
    applied = []
    monkeypatch.setattr(device_module, "keep_freed_memory", lambda: applied.append(True))
    device_module.configure_device(torch.device("cuda"))
    assert applied == []
    device_module.configure_device(torch.device("cpu"))
    assert applied == [True]
    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        for name in MALLOC_ENV:
            monkeypatch.delenv(name, raising=False)
        assert keep_freed_memory()  # the real C library takes the settings
