"""One table from config keys to the schedule's fields (mgvideo/schedule_keys.py): a schedule option is one
MultigridConfig field plus one row, and the builder, the config's checks and defaults, the schedule's error
messages and `mgvideo plan`'s flags all follow from the row."""

import dataclasses
import re

import pytest

from mgvideo.commands import plan
from mgvideo.config import Config, load_config
from mgvideo.engine.builders import build_schedule
from mgvideo.errors import ConfigError, ScheduleError
from mgvideo.multigrid.progressive import ProgressiveConfig
from mgvideo.multigrid.schedule import MultigridConfig
from mgvideo.schedule_keys import (
    DERIVED_FIELDS,
    PROGRESSIVE_KEYS,
    SCHEDULE_KEYS,
    UNSET_FIELDS,
    keyed,
    multigrid_config,
    read_key,
)

ROWS = {row.field: row for row in SCHEDULE_KEYS}


def as_tuples(value):
    return tuple(as_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def test_every_schedule_field_is_a_row_or_named_as_derived_or_unset():
    names = [f.name for f in dataclasses.fields(MultigridConfig)]
    assert len(ROWS) == len(SCHEDULE_KEYS)  # one row per field
    assert sorted(names) == sorted([*ROWS, *DERIVED_FIELDS, *UNSET_FIELDS])
    assert [r.field for r in PROGRESSIVE_KEYS] == [f.name for f in dataclasses.fields(ProgressiveConfig)]


def test_every_key_is_a_config_key_with_the_schedules_default_unless_the_row_says_why_not():
    cfg = Config()
    for row in SCHEDULE_KEYS:
        read_key(cfg, row.key)  # exists
        if row.read and not row.own_default:
            assert as_tuples(read_key(cfg, row.key)) == getattr(MultigridConfig(), row.field), row.key
    assert {r.field for r in SCHEDULE_KEYS if r.own_default} == {"frames", "sampling_rate"}
    for row in PROGRESSIVE_KEYS:
        assert read_key(cfg, row.key) == getattr(ProgressiveConfig(), row.field), row.key


def test_the_builder_reads_each_row_from_its_key():
    cfg = load_config("configs/synthetic/tiny.yaml")
    schedule = build_schedule(cfg)
    for row in SCHEDULE_KEYS:
        if row.read:
            assert getattr(schedule.cfg, row.field) == as_tuples(read_key(cfg, row.key)), row.key
    assert multigrid_config(Config()) == MultigridConfig(frames=8, sampling_rate=8)


def test_plans_schedule_flags_are_exactly_the_rows_with_a_flag():
    flagged = [(r.field, r.key) for r in SCHEDULE_KEYS if r.flag]
    assert [(name, key) for name, key, _ in plan.FLAGS[:len(flagged)]] == flagged
    assert not {key for _, key, _ in plan.FLAGS[len(flagged):]} & {r.key for r in SCHEDULE_KEYS}
    assert plan.FLAG_KEYS == {name: key for name, key, _ in plan.FLAGS}
    assert (plan._flag("long_cycle"), plan._flag("short_cycle_relative")) == ("--no-long-cycle",
                                                                             "--short-cycle-relative")


@pytest.mark.parametrize("row", [r for r in SCHEDULE_KEYS if r.read], ids=lambda r: r.field)
def test_a_schedule_error_names_the_rows_key(row):
    assert str(keyed(ScheduleError(f"{row.field}: bad (got 0)"))) == f"{row.key}: bad (got 0)"


@pytest.mark.parametrize("item, message", [
    ("multigrid.epoch_factor=0", "multigrid.epoch_factor: must be > 0 (got 0.0)"),
    ("data.frames=0", "data.frames: must be a positive integer (got 0)"),
    ("solver.gamma=-1", "solver.gamma: must be > 0 (got -1.0)"),
    ("multigrid.short_cycle_factors=[0.5, -1]", "multigrid.short_cycle_factors: needs factors > 0"),
])
def test_the_config_is_checked_by_the_schedule_naming_the_key(item, message):
    with pytest.raises(ConfigError, match="^" + re.escape(f"command line: {message}")):
        load_config(None, [item])


def test_a_config_error_from_the_schedule_names_the_files_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("multigrid:\n  long_cycle: true\n  eval_freq: 0\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:3: multigrid\.eval_freq: must be a positive integer"):
        load_config(path)


def test_what_only_the_built_recipe_can_tell_is_left_to_the_schedule():
    cfg = load_config(None, ["solver.steps=[0]"])  # the long cycle's two steps: the schedule's to refuse
    with pytest.raises(ScheduleError, match=r"^solver\.steps: the long cycle needs two steps"):
        build_schedule(cfg)
