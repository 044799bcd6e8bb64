"""Read a measured cost table: the rows `mgvideo profile MODEL --config RECIPE --json` prints (one JSON object
per line, or a JSON list of them) as ms and peak MB per clip at each (frames, crop)."""

from __future__ import annotations

import json
from pathlib import Path

from mgvideo.errors import ConfigError
from mgvideo.multigrid.cost import CostTable

HOW = "write one with `mgvideo profile MODEL --config RECIPE --json > FILE`"


def profile_rows(path: str | Path, key: str) -> list[dict]:
    """The profile's rows; a ConfigError naming `key` and the file when it is missing or not such rows."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{key}: {path}: cannot read it ({err.strerror or err}); {HOW}") from None
    try:
        stripped = text.strip()
        rows = json.loads(stripped) if stripped.startswith("[") else [
            json.loads(line) for line in stripped.splitlines() if line.strip()]
        if not rows or not all(isinstance(r, dict) for r in rows):
            raise ValueError("no rows")
    except ValueError as err:
        raise ConfigError(f"{key}: {path}: not the rows `mgvideo profile --json` prints ({err}); "
                          f"{HOW}") from None
    return rows


def read_cost_table(path: str | Path, key: str) -> CostTable:
    """The file's ms (and, where every row has it, peak MB) per clip at each (frames, crop); a shape
    measured at several batches gets the mean of its per-clip figures."""
    ms: dict[tuple[int, int], list[float]] = {}
    mb: dict[tuple[int, int], list[float]] = {}
    try:
        for row in profile_rows(path, key):
            shape, batch = (int(row["frames"]), int(row["crop"])), int(row["batch"])
            ms.setdefault(shape, []).append(1e3 * float(row["sec_per_iter"]) / batch)
            if "peak_mb" in row:
                mb.setdefault(shape, []).append(float(row["peak_mb"]) / batch)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as err:
        raise ConfigError(f"{key}: {path}: a row lacks batch, frames, crop or sec_per_iter ({err!r}); "
                          f"{HOW}") from None
    memory = _mean(mb) if set(mb) == set(ms) and all(v == v for v in _mean(mb).values()) else None  # no NaN
    try:
        return CostTable.from_dicts(_mean(ms), memory, source=str(path))
    except ConfigError as err:
        raise ConfigError(f"{key}: {str(err).partition(': ')[2]}") from None


def _mean(values: dict[tuple[int, int], list[float]]) -> dict[tuple[int, int], float]:
    return {k: sum(v) / len(v) for k, v in values.items()}
