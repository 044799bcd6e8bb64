"""Bench configs: a trainer recipe plus a `bench:` section, and the trainer config of each variant."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mgvideo.config import Config, build_config, override
from mgvideo.config_parse import parse_override, read_yaml
from mgvideo.errors import ConfigError


def load_bench_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()
                      ) -> tuple[Config, dict[str, Any] | None, dict[str, str]]:
    """A recipe file that may also hold a `bench:` mapping. Returns the trainer config, that mapping with
    its `bench.<key>=...` overrides applied (None when the file has none), and where each of its keys came
    from ('file:line' or 'command line'); the other overrides go to the trainer config."""
    raw, lines = read_yaml(Path(path))
    section = raw.pop("bench", None)
    if section is not None and not isinstance(section, dict):
        raise ConfigError(f"{path}:{lines.get('bench', '?')}: section 'bench' must be a mapping")
    origins = {f"bench.{k}": f"{path}:{lines.get(f'bench.{k}', '?')}" for k in section or {}}

    given: dict[str, Any] = {}  # bench.<key>=... from the command line

    def trainer_overrides() -> Iterator[tuple[str, Any]]:
        # Parsed lazily, in order, so that the first bad override is the one reported.
        for item in overrides:
            key, value = parse_override(item)
            if key.startswith("bench."):
                given[key[len("bench."):]] = value
                origins[key] = "command line"
            else:
                yield key, value

    cfg = build_config(raw, lines, str(path), trainer_overrides())
    if given:
        section = {**(section or {}), **given}
    return cfg, section, origins


def load_any_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A trainer recipe, or a bench config's multigrid run: what `plan`, `profile` and `bench data` read.
    The command line's keys come last, so that `multigrid.short_cycle=false` is not undone by the run's
    switches."""
    cfg, bench, origins = load_bench_config(path, overrides)
    if bench is None:
        return cfg
    given = dict(parse_override(item) for item in overrides)
    return bench_variant_config(cfg, bench.get("overrides"), "multigrid",
                                {"multigrid.long_cycle": True, "multigrid.short_cycle": True},
                                origins.get("bench.overrides", str(path)), multigrid_family=True,
                                **{k: v for k, v in given.items() if not k.startswith("bench.")})


def bench_variant_config(cfg: Config, overrides: Any, variant: str, switches: dict[str, Any], where: str,
                         multigrid_family: bool, **dotted: Any) -> Config:
    """The trainer config of one benchmark variant: its switches (cycles, schedule), then the bench's
    `overrides.multigrid` (the multigrid family only), then `overrides.<variant>`, then `dotted`."""
    overrides = overrides or {}
    if not isinstance(overrides, dict) or any(not isinstance(v, dict) for v in overrides.values()):
        raise ConfigError(f"{where}: bench.overrides must map variant names to key: value mappings")
    keys = dict(switches)
    if multigrid_family:
        keys.update(overrides.get("multigrid", {}))
    keys.update(overrides.get(variant, {}))
    keys.update(dotted)
    try:
        return override(cfg, **keys)
    except ConfigError as err:
        raise ConfigError(f"{where}: bench.overrides.{variant}: {err}") from err
