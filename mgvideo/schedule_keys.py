"""The one table from config keys to the schedule's inputs.

Each row names a `MultigridConfig` field, the config key that sets it and, where `mgvideo plan` has one, the
flag that is a shorthand for that key. Everything that relates the two sides reads it: the builder
(`engine.builders.build_schedule`), the checks of a config as it is read (`config.validate`), the wording of
a schedule error (the config key, not the field), and `plan`'s flags. A new schedule option is one field
in `MultigridConfig` plus one row here, and a config field whose default is `mirror(field)`.

The schedule is the only validator of its inputs and the only source of their defaults. This module imports
no config (config.py imports it): a config is read through its dotted keys.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, fields
from dataclasses import field as dataclass_field
from typing import Any

from mgvideo.errors import ConfigError, ScheduleError
from mgvideo.multigrid.progressive import ProgressiveConfig
from mgvideo.multigrid.schedule import MultigridConfig, validate_config


# -- flag values --------------------------------------------------------------------------------------
def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError
    return value


def int_list(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def float_list(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(","))


def pairs(text: str) -> tuple[tuple[float, float], ...]:
    values = tuple(float_list(p) for p in text.split(";"))
    if any(len(p) != 2 for p in values):
        raise ValueError
    return values


int_list.__name__ = "comma-separated integers"  # what argparse calls the type in its errors
float_list.__name__ = "comma-separated numbers"
pairs.__name__ = "';'-separated t,s pairs"
positive_int.__name__ = "positive integer"


@dataclass(frozen=True)
class Flag:
    """A command-line flag for a config key: a value parsed by `parse` (or one of `choices`), or a switch
    that sets `const` (a switch to False is written --no-NAME)."""

    parse: Callable[[str], Any] | None = None
    help: str | None = None
    const: Any = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None

    def option(self, name: str) -> str:
        return "--" + ("no-" if self.const is False else "") + name.replace("_", "-")

    def add_to(self, parser: argparse.ArgumentParser, name: str) -> None:
        """Add the flag, its value landing in `args.<name>` (None when not given)."""
        given = {"dest": name, "help": self.help, "metavar": self.metavar}
        if self.const is not None:
            given.update(action="store_const", const=self.const)
        else:
            given.update(type=self.parse, choices=self.choices)
        parser.add_argument(self.option(name), **{k: v for k, v in given.items() if v is not None})


@dataclass(frozen=True)
class ScheduleKey:
    """One row: the schedule's `field` is set by the config `key`; `flag` is `plan`'s shorthand for the key.
    `read=False`: the builder makes the field from the key (the cost table from its file), not copies it.
    `own_default`: why the config's default for the key is not the schedule's (else it is `mirror(field)`)."""

    field: str
    key: str
    flag: Flag | None = None
    read: bool = True
    own_default: str = ""


# The schedule flags come first, in `plan`'s order (its --help and which flag it refuses first).
# data.frames and data.sampling_rate keep the generic recipe's clip (Config(): i3d_r50, 8 frames at rate 8);
# MultigridConfig's are PySlowFast's Kinetics SlowFast 8x8 (32 frames at rate 2), which `plan` without
# --config plans. Both are pinned: the one by resume fingerprints, the other by the reference's schedule.
_GENERIC = "the generic recipe's clip, 8 frames at rate 8 (the schedule's: SlowFast 8x8's 32 at rate 2)"
SCHEDULE_KEYS: tuple[ScheduleKey, ...] = (
    ScheduleKey("frames", "data.frames", Flag(positive_int, "default clip length T (32)"),
                own_default=_GENERIC),
    ScheduleKey("crop", "data.crop", Flag(positive_int, "default crop S (224)")),
    ScheduleKey("sampling_rate", "data.sampling_rate", Flag(positive_int, "(2)"), own_default=_GENERIC),
    ScheduleKey("steps", "solver.steps", Flag(int_list, "baseline LR steps in epochs (default 0,94,154,196; "
                                                        "with cosine: equal slices)")),
    ScheduleKey("max_epoch", "solver.max_epoch", Flag(int, "baseline epochs (239)")),
    ScheduleKey("gamma", "solver.gamma", Flag(float, "(0.1)")),
    ScheduleKey("epoch_factor", "multigrid.epoch_factor",
                Flag(float, "multigrid trains this many times the epochs (1.5)")),
    ScheduleKey("long_cycle_factors", "multigrid.long_cycle_factors",
                Flag(pairs, '(t, s) pairs, e.g. "0.25,0.7071;0.5,0.7071;0.5,1;1,1"')),
    ScheduleKey("short_cycle_factors", "multigrid.short_cycle_factors",
                Flag(float_list, 'e.g. "0.5,0.7071"')),
    ScheduleKey("long_cycle", "multigrid.long_cycle", Flag(const=False)),
    ScheduleKey("short_cycle", "multigrid.short_cycle", Flag(const=False)),
    ScheduleKey("short_cycle_relative", "multigrid.short_cycle_relative",
                Flag(const=True,
                     help="short-cycle crops from the current crop, not the default one (issue #429)")),
    ScheduleKey("lr_policy", "solver.lr_policy", Flag(choices=("steps", "cosine"))),
    ScheduleKey("scale_jitter", "multigrid.scale_jitter"),
    ScheduleKey("eval_freq", "multigrid.eval_freq"),
    ScheduleKey("finetune_short_cycle", "multigrid.finetune_short_cycle"),
    ScheduleKey("finetune_fraction", "multigrid.finetune_fraction"),
    ScheduleKey("cost_table", "multigrid.cost_table", read=False),
)
# The fields no row sets: the builder derives `shape_multiple` (multigrid.shape_multiple, else the model's,
# `engine.builders.run_shape_multiple`) and the cosine's shape is the schedule's own.
DERIVED_FIELDS = ("shape_multiple",)
UNSET_FIELDS = ("cosine_end", "cosine_cycles")
# The progressive ramp (`multigrid.schedule: progressive`): each ProgressiveConfig field and its key; its
# errors call a field "progressive <field>".
PROGRESSIVE_KEYS: tuple[ScheduleKey, ...] = tuple(
    ScheduleKey(f.name, f"multigrid.progressive_{f.name}") for f in fields(ProgressiveConfig))

_ERROR_KEYS = ({r.field: r.key for r in SCHEDULE_KEYS}
               | {f"progressive {r.field}": r.key for r in PROGRESSIVE_KEYS})


def mirror(name: str, schedule: type = MultigridConfig) -> Any:
    """The config field of a schedule input: the schedule's default, with the YAML's lists for tuples."""
    default = next(f.default for f in fields(schedule) if f.name == name)
    if isinstance(default, tuple):  # a fresh list for each config
        return dataclass_field(default_factory=lambda: _lists(default))
    return dataclass_field(default=default)


def multigrid_config(cfg: Any, **derived: Any) -> MultigridConfig:
    """The schedule's inputs read from a `Config`, with the builder's `derived` fields (shape_multiple,
    cost_table) on top; the unset ones keep the schedule's defaults."""
    values = {r.field: _tuples(read_key(cfg, r.key)) for r in SCHEDULE_KEYS if r.read}
    return MultigridConfig(**values, **derived)


def progressive_config(cfg: Any) -> ProgressiveConfig:
    """The progressive ramp of a `Config`."""
    return ProgressiveConfig(**{r.field: read_key(cfg, r.key) for r in PROGRESSIVE_KEYS})


def keyed(err: ScheduleError) -> ScheduleError:
    """The schedule error with the field it names written as the config key that sets it."""
    name, _, problem = str(err).partition(": ")
    return ScheduleError(f"{_ERROR_KEYS.get(name, name)}: {problem}")


def check_config(cfg: Any, where: str) -> None:
    """The schedule's checks of the values a `Config` gives it (not whether the recipe builds: a long cycle's
    steps, the model's multiple); ConfigError '<where>: <key>: <problem>' naming the first bad one."""
    try:
        validate_config(multigrid_config(cfg), recipe=False)
    except ScheduleError as err:
        raise ConfigError(f"{where}: {keyed(err)}") from None


def read_key(cfg: Any, key: str) -> Any:
    section, name = key.split(".")
    return getattr(getattr(cfg, section), name)


def _tuples(value: Any) -> Any:
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _lists(value: Any) -> Any:
    return [_lists(v) for v in value] if isinstance(value, tuple) else value
