"""Reading config text: YAML recipes with the line of each key, `key=value` overrides, and values checked
against the type of the dataclass field they go into (lossless conversions only)."""

from __future__ import annotations

import dataclasses
import difflib
import math
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from mgvideo.errors import ConfigError


def read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
    """A recipe file's top-level mapping and the line of each section and key (safe_load: data only)."""
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config: {err.strerror}") from err
    try:
        raw, lines = yaml.safe_load(text) or {}, yaml_key_lines(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return raw, lines


def parse_override(item: str) -> tuple[str, Any]:
    """A command-line `key=value` as the key and its value read as YAML."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{item}': expected key=value, e.g. solver.base_lr=0.05")
    try:
        return key.strip(), yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{item}': value is not valid YAML: {err}") from err


def yaml_key_lines(text: str) -> dict[str, int]:
    """Map 'section' and 'section.key' to their 1-based line numbers in the YAML text (for errors)."""
    lines: dict[str, int] = {}
    node = yaml.compose(text)
    if not isinstance(node, yaml.MappingNode):
        return lines
    for key_node, value_node in node.value:
        section = str(key_node.value)
        lines[section] = key_node.start_mark.line + 1
        if isinstance(value_node, yaml.MappingNode):
            for sub_key, _ in value_node.value:
                lines[f"{section}.{sub_key.value}"] = sub_key.start_mark.line + 1
    return lines


def assign(root: Any, dotted: str, value: Any, where: str) -> None:
    """Set `root.<section>.<key>` (dataclasses both) to `value` checked against the field's type; a bad key
    or value raises ConfigError at `where`, suggesting the closest key. `section.key.entry` sets one entry
    of a mapping field (e.g. `model.options.drop_path=0.1`), keeping the others."""
    section_name, _, key = dotted.partition(".")
    key, _, entry = key.partition(".")
    sections = {f.name for f in dataclasses.fields(root)}
    if section_name not in sections:
        raise ConfigError(f"{where}: unknown section '{section_name}'{_suggest(section_name, sections)}")
    section = getattr(root, section_name)
    names = {f.name for f in dataclasses.fields(section)}
    if key not in names:
        raise ConfigError(f"{where}: unknown key '{dotted}'{_suggest(key, names, section_name + '.')}")
    hint = typing.get_type_hints(type(section))[key]
    if entry:
        if typing.get_origin(hint) is not dict:
            raise ConfigError(f"{where}: {section_name}.{key} is not a mapping, so '{dotted}' names nothing")
        value = {**getattr(section, key), entry: value}
    setattr(section, key, _coerce(value, hint, dotted, where))


def _coerce(value: Any, hint: Any, key: str, where: str) -> Any:
    """Check `value` against a type hint, converting only where lossless (int -> float, tuple -> list)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)

    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: {key} must be {expected}, got {value!r}")

    if origin is Literal:
        if value not in args:
            raise bad("one of " + ", ".join(repr(a) for a in args))
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("an integer")
        return value
    if hint is float:
        if isinstance(value, str):  # YAML 1.1 reads 1e-4 (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                raise bad("a number") from None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise bad("a number")
        if not math.isfinite(value):
            raise bad("a finite number")
        return float(value)
    if hint is str:
        if value is None:  # `key=` on the command line or `key:` in YAML: empty, e.g. no labels file
            return ""
        if not isinstance(value, str):
            raise bad("a string")
        return value
    if origin is list:
        if not isinstance(value, list | tuple):
            raise bad("a list")
        return [_coerce(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise bad("a mapping")
        return dict(value)
    raise AssertionError(f"unsupported config type {hint} for {key}")


def _suggest(word: str, options: set[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, sorted(options), n=1)
    return f" (did you mean '{prefix}{close[0]}'?)" if close else ""
