"""Run configuration: plain dataclasses loaded from YAML, with dotted `key=value` overrides.

Every value is checked against its field's type and range before any work starts; a bad key or value
raises ConfigError naming the key and, where known, the file and line. Nothing here is global: the
trainer receives a `Config` and passes its sections down.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mgvideo.errors import ConfigError


@dataclass
class DataConfig:
    """Where the videos are and what a full-size training clip is (the reference's T, S and rate)."""

    dataset: Literal["kinetics", "ssv2", "charades", "synthetic"] = "kinetics"
    root: str = "data/kinetics"
    train_list: str = "train.csv"
    val_list: str = "val.csv"
    test_list: str = "val.csv"
    labels_file: str = ""  # SSv2: the labels JSON; Kinetics: optional class-name list so splits agree
    num_classes: int = 400
    frames: int = 8
    crop: int = 224
    sampling_rate: int = 8
    mean: list[float] = field(default_factory=lambda: [0.45, 0.45, 0.45])
    std: list[float] = field(default_factory=lambda: [0.225, 0.225, 0.225])
    flip: bool = True  # random horizontal flip in training (off for SSv2, whose labels say left/right)
    workers: int = -1  # loader processes per training process; -1: this node's cores / local ranks, less 1
    synthetic_size: str = "default"  # for dataset=synthetic: what `synthetic.generate` makes if root is empty
    # Decoded-frame cache (data/cache.py): each video decoded once, shared by every loader and worker.
    # memory: files in /dev/shm; disk: under <root>/.frame_cache (or cache_dir); auto: disk for the
    # synthetic dataset, none for real datasets (whose decoded frames rarely fit).
    cache: Literal["auto", "none", "memory", "disk"] = "auto"
    cache_dir: str = ""
    # The cache's size bound in GB (1e9 bytes); 0: only free space bounds it (a fill leaves 10 % of the
    # file system free). Videos past the bound are decoded on the fly, at the same size, on every read.
    cache_max_gb: float = 0.0
    # Multi-resolution store (`mgvideo data prepare --out STORE`): each clip decodes the smallest transcoded
    # copy covering its short side; videos the store lacks are read from their originals. "": originals.
    store: str = ""
    ssv2_ext: str = ".webm"  # SSv2: the videos' file extension (the release is .webm; the synthetic set .mp4)
    synthetic_seed: int = 0  # for dataset=synthetic: the generator's seed (the data draw); 0 is the tuned one


@dataclass
class ModelConfig:
    """Which zoo model to build, with keyword overrides passed to `build_model`."""

    name: str = "i3d_r50"
    options: dict[str, Any] = field(default_factory=dict)
    bn_base_size: int = 8
    # Pretrained weights for a fresh run (not a resume): a PySlowFast .pyth, a Caffe2 .pkl, an mgvideo
    # model_final.pt or checkpoints/last.pt, or a Hugging Face folder. A head of another class count is
    # re-initialised (engine/init_from.py).
    init_from: str = ""


@dataclass
class MultigridSection:
    """The method's knobs. Both cycles off gives the baseline: a one-stage schedule."""

    long_cycle: bool = True
    short_cycle: bool = True
    epoch_factor: float = 1.5
    long_cycle_factors: list[list[float]] = field(
        default_factory=lambda: [[0.25, 0.5**0.5], [0.5, 0.5**0.5], [0.5, 1.0], [1.0, 1.0]]
    )
    short_cycle_factors: list[float] = field(default_factory=lambda: [0.5, 0.5**0.5])
    short_cycle_relative: bool = False  # True: short-cycle crops follow the stage's crop (PySlowFast #429)
    scale_jitter: Literal["reference", "same_view"] = "reference"  # same_view: coarse crops keep the view
    eval_freq: int = 3
    # [frames, crop] multiples every shape is rounded to; [] takes them from the model (a ViT's tubelet and
    # patch sizes, so that the token count per batch stays constant; CNNs: none).
    shape_multiple: list[int] = field(default_factory=list)
    # Which schedule of the family: the paper's ordered cycles, its random-shape ablation (seeded by
    # train.seed), or progressive resizing (FFCV / composer: the baseline's epochs and LR, crops growing
    # from progressive_start_scale to full at progressive_ramp_end of the run; the cycles are unused).
    schedule: Literal["multigrid", "random", "progressive"] = "multigrid"
    # The closing phase, beyond the paper (defaults: the reference). False: fine-tune at the full shape
    # only; a fraction > 0: fine-tune for that share of the baseline's epochs, uncompressed.
    finetune_short_cycle: bool = True
    finetune_fraction: float = 0.0
    progressive_start_scale: float = 0.5
    progressive_ramp_end: float = 0.8
    progressive_crop_step: int = 8


@dataclass
class SolverConfig:
    """Optimisation: the global batch (all devices), the LR schedule and SGD."""

    batch_size: int = 64
    base_lr: float = 0.1
    lr_policy: Literal["steps", "cosine"] = "steps"
    steps: list[int] = field(default_factory=lambda: [0, 94, 154, 196])
    max_epoch: int = 239
    gamma: float = 0.1
    warmup_epochs: float = 34.0
    warmup_start_lr: float = 0.01
    rescale_warmup: bool = False  # True: stretch the warmup by the multigrid epoch factor
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    bn_weight_decay: bool = True  # False: no weight decay on BN and bias (the reference's ZERO_WD_1D_PARAM)
    label_smoothing: float = 0.0
    clip_grad_norm: float = 0.0  # 0: off
    # The devices `batch_size` and `base_lr` are tuned for (8 in the paper's recipes); 0: any, the batch is
    # split over the devices that run. On fewer devices `device_scaling` decides: `accumulate` keeps the
    # global batch and LR (gradients summed over micro-batches), `linear_lr` keeps the per-device batch
    # and scales the LR with the global batch (engine/builders.device_plan).
    recipe_devices: int = 0
    device_scaling: Literal["accumulate", "linear_lr"] = "accumulate"
    accumulate: int = 1  # micro-batches per optimizer step on each device (times the device shortfall)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # adamw: VideoMAE's fine-tuning (betas; momentum unused)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    layer_decay: float = 1.0  # layer-wise LR decay for ViTs: block i gets decay^(depth + 1 - (i + 1))
    # The multigrid LR multiplier of a B-times larger batch: B (linear, the reference) or sqrt(B).
    lr_batch_scaling: Literal["linear", "sqrt"] = "linear"


@dataclass
class TrainConfig:
    """Run-time behaviour: device, precision, evaluation and checkpoint cadence."""

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA where supported, else none
    channels_last: bool = True
    compile: bool = False
    pin_memory: bool = True
    # Precise BN uses min(precise_bn_batches, ceil(precise_bn_clips / global batch)) training
    # batches of the shape it refreshes. The reference counts batches only (200; at a coarse stage's
    # large batch that is many clips): precise_bn_clips 0 keeps that; > 0 caps the cost in clips.
    precise_bn_batches: int = 200
    precise_bn_clips: int = 0
    eval_period_samples: int = 0  # 0: the reference cadence (eval_freq per stage)
    eval_batch_size: int = 0  # 0: the solver's batch per device (per micro-batch when accumulating)
    checkpoint_minutes: float = 10.0
    checkpoint_every_iters: int = 0  # 0: off; small values make resume tests fast
    log_period: int = 10
    # Single-stage runs: evaluate (with precise BN) and keep checkpoints/epoch_NNN.pt every this many
    # epochs, as PySlowFast's TRAIN.EVAL_PERIOD; 0: the reference cadence (multigrid.eval_freq).
    eval_period: int = 0
    # > 0: evaluate at this many evenly spaced iterations of the run's own schedule, the last one after
    # its final iteration (the benchmark's protocol); 0: off
    eval_points: int = 0


@dataclass
class TestConfig:
    """Multi-view testing: `clips` temporal × `crops` spatial views per video."""

    clips: int = 10
    crops: int = 3
    crop_size: int = 0  # 0: data.crop
    ensemble: Literal["auto", "sum", "max"] = "auto"  # auto: max for multi-label data, else sum
    batch_size: int = 8
    # Val and test drop (and name) a video none of whose views can be read; above this fraction of the
    # videos the evaluation stops with an error instead of reporting on what is left.
    max_failed_fraction: float = 0.05


@dataclass
class Config:
    """A whole run. Sections mirror the YAML file's top-level keys."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    multigrid: MultigridSection = field(default_factory=MultigridSection)
    solver: SolverConfig = field(default_factory=SolverConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    test: TestConfig = field(default_factory=TestConfig)

    @property
    def multi_label(self) -> bool:
        """Charades is multi-label (sigmoid, mAP, max ensembling); the others are single-label."""
        return self.data.dataset == "charades"


# Keys that change how a run executes but not what it computes: excluded from the resume fingerprint.
RUNTIME_KEYS = frozenset(
    {
        "data.workers", "data.cache_dir", "train.device", "train.pin_memory", "train.compile",
        "data.cache_max_gb", "data.store",  # a store changes pixels only within its transcoding loss
        "train.checkpoint_minutes",
        "train.checkpoint_every_iters", "train.log_period", "train.eval_batch_size",
        "test.clips", "test.crops", "test.crop_size", "test.ensemble", "test.batch_size",
        "test.max_failed_fraction",
    }
)


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML recipe (or the defaults if `path` is None), apply `key=value` overrides, validate."""
    return load_config_with(path, overrides)[0]


def load_config_with(path: str | Path | None, overrides: list[str] | tuple[str, ...] = (),
                     extra: str = "") -> tuple[Config, dict[str, Any] | None, dict[str, str]]:
    """`load_config` for a file that may also hold one non-trainer mapping named `extra` (the benchmark's
    `bench:`). Returns the config, that mapping as read with its `extra.<key>=...` overrides applied
    (None when the file has none), and where each of its keys came from ('file:line' or 'command line')."""
    raw: dict[str, Any] = {}
    lines: dict[str, int] = {}
    source = "<defaults>" if path is None else str(path)
    if path is not None:
        raw, lines = _read_yaml(Path(path))
    section = raw.pop(extra, None) if extra else None
    if section is not None and not isinstance(section, dict):
        raise ConfigError(f"{source}:{lines.get(extra, '?')}: section '{extra}' must be a mapping")
    origins = {f"{extra}.{k}": f"{source}:{lines.get(f'{extra}.{k}', '?')}" for k in section or {}}
    cfg = Config()
    for name, values in raw.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{source}:{lines.get(name, '?')}: section '{name}' must be a mapping")
        for key, value in values.items():
            _assign(cfg, f"{name}.{key}", value, f"{source}:{lines.get(f'{name}.{key}', '?')}")
    for item in overrides:
        key, value = _parse_override(item)
        if extra and key.startswith(f"{extra}."):
            section = dict(section or {})
            section[key[len(extra) + 1:]] = value
            origins[key] = "command line"
        else:
            _assign(cfg, key, value, "command line")
            lines[key] = 0  # from now on this key comes from the command line
    try:
        validate(cfg, source)
    except ConfigError as err:  # name the line of the key at fault, or the command line
        named = [k for k in lines if "." in k and f"{k} " in str(err)]
        if not named:
            raise
        where = f"{source}:{lines[named[0]]}" if lines[named[0]] else "command line"
        raise ConfigError(str(err).replace(f"{source}: ", f"{where}: ", 1)) from err
    return cfg, section, origins


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, int]]:
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


def _parse_override(item: str) -> tuple[str, Any]:
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{item}': expected key=value, e.g. solver.base_lr=0.05")
    try:
        return key.strip(), yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"override '{item}': value is not valid YAML: {err}") from err


def load_any_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """A trainer recipe, or a bench config's multigrid run: what `plan`, `profile` and `bench data` read."""
    cfg, bench, origins = load_config_with(path, overrides, extra="bench")
    if bench is None:
        return cfg
    return bench_variant_config(cfg, bench.get("overrides"), "multigrid",
                                {"multigrid.long_cycle": True, "multigrid.short_cycle": True},
                                origins.get("bench.overrides", str(path)), multigrid_family=True)


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


def override(cfg: Config, **dotted: Any) -> Config:
    """A copy of `cfg` with fields replaced, e.g. `override(cfg, **{"solver.max_epoch": 2})`; validated."""
    new = from_dict(to_dict(cfg))
    for key, value in dotted.items():
        _assign(new, key, value, "override")
    validate(new, "override")
    return new


def to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain nested dicts and lists (what `config.yaml` holds)."""
    return dataclasses.asdict(cfg)


def from_dict(raw: dict[str, Any]) -> Config:
    """Inverse of `to_dict` (also how checkpoints carry their config); validated."""
    cfg = Config()
    for section, values in raw.items():
        for key, value in values.items():
            _assign(cfg, f"{section}.{key}", value, "<dict>")
    validate(cfg, "<dict>")
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    """Write the fully resolved config as YAML."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def fingerprint(cfg: Config, extra: Any = None) -> str:
    """A short hash of everything that determines the run's result (runtime keys excluded).

    `extra` (e.g. the schedule's steps and shapes) is hashed too, so that a code change that alters the
    schedule is caught as well as a config change.
    """
    flat = {k: v for k, v in _flatten(to_dict(cfg)).items() if k not in RUNTIME_KEYS}
    blob = json.dumps([flat, extra], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_changes(saved: dict[str, Any] | None, cfg: Config) -> list[str]:
    """'key: old -> new' for every fingerprinted key where `cfg` differs from a saved `to_dict` config
    (a checkpoint's); [] when nothing was saved or nothing differs (then the schedule itself changed)."""
    if not isinstance(saved, dict):
        return []
    old, new = _flatten(saved), _flatten(to_dict(cfg))
    keys = sorted(k for k in set(old) | set(new) if k not in RUNTIME_KEYS and old.get(k) != new.get(k))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys]


def validate(cfg: Config, source: str = "<config>") -> None:
    """Range and consistency checks that types alone cannot express."""
    d, s, m, t = cfg.data, cfg.solver, cfg.multigrid, cfg.train
    positive = {
        "data.num_classes": d.num_classes, "data.frames": d.frames, "data.crop": d.crop,
        "data.sampling_rate": d.sampling_rate, "model.bn_base_size": cfg.model.bn_base_size,
        "solver.batch_size": s.batch_size, "solver.base_lr": s.base_lr, "solver.max_epoch": s.max_epoch,
        "multigrid.epoch_factor": m.epoch_factor, "multigrid.eval_freq": m.eval_freq,
        "train.log_period": t.log_period, "test.clips": cfg.test.clips, "test.crops": cfg.test.crops,
        "test.batch_size": cfg.test.batch_size, "solver.accumulate": s.accumulate,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{source}: {key} must be positive, got {value}")
    non_negative = {
        "solver.warmup_epochs": s.warmup_epochs, "data.cache_max_gb": d.cache_max_gb,
        "solver.warmup_start_lr": s.warmup_start_lr, "solver.weight_decay": s.weight_decay,
        "solver.clip_grad_norm": s.clip_grad_norm, "train.precise_bn_batches": t.precise_bn_batches,
        "train.precise_bn_clips": t.precise_bn_clips,
        "train.eval_period_samples": t.eval_period_samples, "train.eval_batch_size": t.eval_batch_size,
        "train.eval_points": t.eval_points, "data.synthetic_seed": d.synthetic_seed,
        "train.checkpoint_minutes": t.checkpoint_minutes, "solver.momentum": s.momentum,
        "train.checkpoint_every_iters": t.checkpoint_every_iters, "test.crop_size": cfg.test.crop_size,
        "solver.recipe_devices": s.recipe_devices, "train.eval_period": t.eval_period,
    }
    for key, value in non_negative.items():
        if value < 0:
            raise ConfigError(f"{source}: {key} must be >= 0, got {value}")
    if d.workers < -1:
        raise ConfigError(f"{source}: data.workers must be >= 0, or -1 for one per core, got {d.workers}")
    if not 0.0 <= s.label_smoothing < 1.0:
        raise ConfigError(f"{source}: solver.label_smoothing must be in [0, 1), got {s.label_smoothing}")
    if len(d.mean) != 3 or len(d.std) != 3 or min(d.std) <= 0:
        raise ConfigError(f"{source}: data.mean and data.std need 3 values each (std > 0)")
    if s.lr_policy == "steps":
        if not s.steps or s.steps[0] != 0 or any(b <= a for a, b in zip(s.steps, s.steps[1:])):
            raise ConfigError(f"{source}: solver.steps must start at 0 and increase, got {s.steps}")
        if s.steps[-1] >= s.max_epoch:
            raise ConfigError(f"{source}: solver.max_epoch ({s.max_epoch}) must exceed the last step")
    for pair in m.long_cycle_factors:
        if len(pair) != 2 or min(pair) <= 0:
            raise ConfigError(f"{source}: multigrid.long_cycle_factors needs [t, s] pairs > 0, got {pair}")
    if any(f <= 0 for f in m.short_cycle_factors):
        raise ConfigError(f"{source}: multigrid.short_cycle_factors must be > 0")
    if not 0.0 <= cfg.test.max_failed_fraction <= 1.0:
        raise ConfigError(f"{source}: test.max_failed_fraction must be in [0, 1], "
                          f"got {cfg.test.max_failed_fraction}")
    if s.nesterov and s.momentum == 0 and s.optimizer == "sgd":
        raise ConfigError(f"{source}: solver.nesterov needs solver.momentum > 0")
    if t.eval_period and m.long_cycle:
        raise ConfigError(f"{source}: train.eval_period is for single-stage runs (multigrid.long_cycle: "
                          "false); a multigrid run evaluates per stage (multigrid.eval_freq)")
    cadences = [k for k, v in (("train.eval_period", t.eval_period), ("train.eval_points", t.eval_points),
                               ("train.eval_period_samples", t.eval_period_samples)) if v]
    if len(cadences) > 1:
        raise ConfigError(f"{source}: set one evaluation cadence, not {' and '.join(cadences)}")
    if not 0 < s.layer_decay <= 1:
        raise ConfigError(f"{source}: solver.layer_decay must be in (0, 1], got {s.layer_decay}")
    if len(s.betas) != 2 or not all(0 <= b < 1 for b in s.betas):
        raise ConfigError(f"{source}: solver.betas needs two values in [0, 1), got {s.betas}")
    if m.shape_multiple and (len(m.shape_multiple) != 2 or min(m.shape_multiple) < 1):
        raise ConfigError(f"{source}: multigrid.shape_multiple must be [] or [frames, crop] multiples >= 1, "
                          f"got {m.shape_multiple}")


# ---- helpers ---------------------------------------------------------------------------------------


def _assign(cfg: Config, dotted: str, value: Any, where: str) -> None:
    section_name, _, key = dotted.partition(".")
    sections = {f.name for f in dataclasses.fields(Config)}
    if section_name not in sections:
        raise ConfigError(f"{where}: unknown section '{section_name}'{_suggest(section_name, sections)}")
    section = getattr(cfg, section_name)
    names = {f.name for f in dataclasses.fields(section)}
    if key not in names:
        raise ConfigError(f"{where}: unknown key '{dotted}'{_suggest(key, names, section_name + '.')}")
    hint = typing.get_type_hints(type(section))[key]
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


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and not prefix:
            out.update(_flatten(value, f"{key}."))
        else:
            out[prefix + key] = value
    return out


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


def resolve_recipe(name: str | Path) -> Path:
    """A recipe path as given, or a name such as 'synthetic/tiny' found among the shipped recipes."""
    path = Path(name)
    if path.exists():
        return path
    shipped = Path(__file__).parent / "configs"
    for candidate in (shipped / name, shipped / f"{name}.yaml"):
        if candidate.is_file():
            return candidate
    raise ConfigError(f"{name}: no such config file, nor a shipped recipe of that name "
                      f"(see {shipped})")
