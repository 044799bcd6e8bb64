"""`mgvideo bench bn`: what sub-batch BN costs against plain BatchNorm3d, per memory format.

For one training-mode forward + backward it counts the aten ops, the full-size copies (copy_, clone,
_to_copy, contiguous) and the full-size tensors allocated, with a TorchDispatchMode, and times it (median of
`--iters`). Three ways of doing it:
  batchnorm3d  plain nn.BatchNorm3d (one group), the reference cost;
  sub_bn       SubBatchNorm3d with `--groups` groups (clip i in group i % k), as mgvideo runs it;
  reshape      the implementation before issue 19: (N, C, ...) reshaped to (N/k, k*C, ...) and one
               batch_norm call, which is a view in the default format but a copy in channels-last.
Figures depend on the machine and its load; set OMP_NUM_THREADS for a stable CPU measurement.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from mgvideo.multigrid.batchnorm import SubBatchNorm3d

COPYING = {"copy_", "clone", "_to_copy", "contiguous", "_reshape_copy"}
VIEWS = {"view", "_unsafe_view", "reshape", "expand", "as_strided", "detach", "alias", "t", "permute",
         "transpose", "slice", "select", "unsqueeze", "squeeze"}


class _Census(TorchDispatchMode):
    """Counts aten ops, full-size copies and full-size tensors made (views left out)."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel, self.ops, self.copies, self.made = numel, 0, 0, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        self.ops += 1
        outs = out if isinstance(out, tuple | list) else (out,)
        full = any(isinstance(o, torch.Tensor) and o.numel() >= self.numel for o in outs)
        if full and name in COPYING:
            self.copies += 1
        if full and name not in VIEWS and not name.endswith("_") and func._overloadname != "out":
            self.made += 1
        return out


class _Reshaped(SubBatchNorm3d):
    """Sub-batch BN as it was before issue 19: one batch_norm call over x.reshape(N/k, k*C, ...), a copy in
    channels-last (and a second one back to channels-last)."""

    def _forward_groups(self, x: torch.Tensor, factor: float | None) -> torch.Tensor:
        k, (n, c) = self.groups, x.shape[:2]
        mean = torch.zeros(c * k, dtype=self.running_mean.dtype)
        var = torch.ones(c * k, dtype=self.running_var.dtype)
        y = F.batch_norm(x.reshape(n // k, c * k, *x.shape[2:]), mean, var, self.weight.repeat(k),
                         self.bias.repeat(k), True, 1.0, self.eps)
        per_group = x.numel() // (c * k)
        self._update_running(mean.view(k, c), var.view(k, c) * ((per_group - 1) / per_group), per_group
                             * k, factor)
        y = y.reshape(x.shape)
        if x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous():
            y = y.contiguous(memory_format=torch.channels_last_3d)
        return y


def measure(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, grad: torch.Tensor,
            iters: int) -> dict:
    """Op census of one forward + backward, then its median time over `iters` runs."""

    def step() -> None:
        xg = x.detach().requires_grad_()
        forward(xg).backward(grad)

    step()  # warm-up
    census = _Census(x.numel())
    with census:
        step()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"aten_ops": census.ops, "full_copies": census.copies, "full_tensors": census.made,
            "ms": 1000 * statistics.median(times)}


def run_rows(shape: tuple[int, ...], groups: int, dtype: torch.dtype, iters: int) -> list[dict]:
    """Every (memory format, implementation) at one shape."""
    torch.manual_seed(0)
    rows = []
    for layout in ("contiguous", "channels_last"):
        memory = torch.channels_last_3d if layout == "channels_last" else torch.contiguous_format
        x = torch.randn(shape).to(dtype).contiguous(memory_format=memory)
        grad = torch.randn(shape).to(dtype).contiguous(memory_format=memory)
        plain, sub, before = nn.BatchNorm3d(shape[1]), SubBatchNorm3d(shape[1]), _Reshaped(shape[1])
        sub.groups = before.groups = groups
        for name, forward in (("batchnorm3d", plain), ("sub_bn", sub), ("reshape", before)):
            rows.append({"layout": layout, "impl": name, **measure(forward, x, grad, iters)})
    return rows


def register(subparsers) -> None:
    parser = subparsers.add_parser("bn", help="sub-batch BN against BatchNorm3d: aten ops, copies, time",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="32,64,8,28,28", help="N,C,T,H,W (default 32,64,8,28,28)")
    parser.add_argument("--groups", type=int, default=4, help="BN groups of sub_bn and reshape (default 4)")
    parser.add_argument("--dtype", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--iters", type=int, default=10, help="timed forward + backward runs (median)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    shape = tuple(int(v) for v in args.shape.split(","))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    print(f"BN forward + backward (training mode) at {shape}, {args.dtype}, {args.groups} groups, "
          f"median of {args.iters}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'layout':<15}{'impl':<13}{'aten ops':>9}{'full copies':>13}{'full tensors':>14}{'ms':>9}")
    for r in run_rows(shape, args.groups, dtype, args.iters):
        print(f"{r['layout']:<15}{r['impl']:<13}{r['aten_ops']:>9}{r['full_copies']:>13}{r['full_tensors']:>14}"
              f"{r['ms']:>9.2f}")
    return 0
