"""Shared test setup: tests run single-threaded and deterministic on CPU."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
