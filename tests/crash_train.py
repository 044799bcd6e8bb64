"""Test helper, run as a script (also under torchrun): `mgvideo train` with a fault injected through the
trainer's documented test hooks (`mgvideo.engine.run.TestHooks`), for the resume tests.

    python tests/crash_train.py CONFIG --out DIR [--crash-at STEP [--crash-rank R]] [--crash-in-save] k=v...

--crash-at: SIGKILL this process once it has finished STEP iterations (under torchrun only on rank R if
given, and only in the first attempt, so that a restart can finish); with --crash-node, its torchrun agent
first (the whole node dies). --crash-in-save: exit with 137 after
the next checkpoint's temp file is written but before it is renamed.
"""

import argparse
import os
import signal
from pathlib import Path

from mgvideo.config import load_config
from mgvideo.engine.run import TestHooks
from mgvideo.engine.trainer import train


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--crash-at", type=int, default=-1)
    parser.add_argument("--crash-rank", type=int, default=None)
    parser.add_argument("--crash-in-save", action="store_true")
    parser.add_argument("--crash-node", action="store_true",
                        help="with --crash-at: SIGKILL the torchrun agent too (a node that dies)")
    args, overrides = parser.parse_known_args()

    def after_step(run) -> None:
        first_attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") == "0"
        if run.state.step == args.crash_at and first_attempt and args.crash_rank in (None, run.info.rank):
            if args.crash_node:
                os.kill(os.getppid(), signal.SIGKILL)
            os.kill(os.getpid(), signal.SIGKILL)

    def before_rename(tmp: Path) -> None:
        os._exit(137)

    hooks = TestHooks(after_step, before_rename if args.crash_in_save else None)
    train(load_config(args.config, overrides), args.out, hooks=hooks)


if __name__ == "__main__":
    main()
