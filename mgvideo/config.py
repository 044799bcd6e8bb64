"""Run configuration: plain dataclasses loaded from YAML, with dotted `key=value` overrides.

Every value is checked against its field's type and range before any work starts; a bad key or value
raises ConfigError naming the key and, where known, the file and line. The schedule's inputs (the keys of
mgvideo/schedule_keys.py's table) are checked by the schedule itself, and take its defaults (`mirror`).
Nothing here is global: the trainer receives a `Config` and passes its sections down.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from mgvideo.config_parse import assign, parse_override, read_yaml
from mgvideo.errors import ConfigError
from mgvideo.multigrid.progressive import ProgressiveConfig
from mgvideo.schedule_keys import check_config, mirror


def runtime(default: Any) -> Any:
    """A field that changes how a run executes but not what it computes: outside the resume fingerprint."""
    return field(default=default, metadata={"runtime": True})


def added(default: Any) -> Any:
    """A field added after runs were saved: in the resume fingerprint only when set off its default, so that
    the runs saved before it existed still resume."""
    return field(default=default, metadata={"added": True})


@dataclass
class DataConfig:
    """Where the videos are and what a full-size training clip is (the reference's T, S and rate)."""

    dataset: str = "kinetics"  # a registered format: one of data.formats.dataset_names()
    root: str = "data/kinetics"
    train_list: str = "train.csv"
    val_list: str = "val.csv"
    test_list: str = "val.csv"
    labels_file: str = ""  # SSv2: the labels JSON; Kinetics: optional class-name list so splits agree
    num_classes: int = 400
    frames: int = 8  # the generic recipe's clip, not the schedule's default (see schedule_keys.py)
    crop: int = mirror("crop")
    sampling_rate: int = 8
    mean: list[float] = field(default_factory=lambda: [0.45, 0.45, 0.45])
    std: list[float] = field(default_factory=lambda: [0.225, 0.225, 0.225])
    flip: bool = True  # random horizontal flip in training (off for SSv2, whose labels say left/right)
    # Loader processes per training process; -1: this node's cores / local ranks, less 1.
    workers: int = runtime(-1)
    synthetic_size: str = "default"  # for dataset=synthetic: what `synthetic.generate` makes if root is empty
    # Decoded-frame cache (data/cache.py): each video decoded once, shared by every loader and worker.
    # memory: files in /dev/shm; disk: under <root>/.frame_cache (or cache_dir); auto: disk for the
    # synthetic dataset, none for real datasets (whose decoded frames rarely fit).
    cache: Literal["auto", "none", "memory", "disk"] = "auto"
    cache_dir: str = runtime("")
    # The cache's size bound in GB (1e9 bytes); 0: only free space bounds it (a fill leaves 10 % of the
    # file system free). Videos past the bound are decoded on the fly, at the same size, on every read.
    cache_max_gb: float = runtime(0.0)
    # Multi-resolution store (`mgvideo data prepare --out STORE`): each clip decodes the smallest transcoded
    # copy covering its short side; videos the store lacks are read from their originals. "": originals.
    # A runtime knob: a store changes pixels only within its transcoding loss.
    store: str = runtime("")
    ssv2_ext: str = ".webm"  # SSv2: the videos' file extension (the release is .webm; the synthetic set .mp4)
    synthetic_seed: int = 0  # for dataset=synthetic: the generator's seed (the data draw); 0 is the tuned one

    def validate(self, where: str) -> None:
        from mgvideo.data.formats import dataset_format  # here, not at the top: mgvideo.data imports config

        dataset_format(self.dataset, where)
        _check_signs(where, "data", self, positive=("num_classes",),
                     non_negative=("cache_max_gb", "synthetic_seed"))
        if self.workers < -1:
            raise ConfigError(f"{where}: data.workers must be >= 0, or -1 for one per core, "
                              f"got {self.workers}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError(f"{where}: data.mean and data.std need 3 values each (std > 0)")


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

    def validate(self, where: str) -> None:
        _check_signs(where, "model", self, positive=("bn_base_size",))


@dataclass
class MultigridSection:
    """The method's knobs. Both cycles off gives the baseline: a one-stage schedule."""

    long_cycle: bool = mirror("long_cycle")
    short_cycle: bool = mirror("short_cycle")
    epoch_factor: float = mirror("epoch_factor")
    long_cycle_factors: list[list[float]] = mirror("long_cycle_factors")
    short_cycle_factors: list[float] = mirror("short_cycle_factors")
    # True: short-cycle crops follow the stage's crop (PySlowFast #429)
    short_cycle_relative: bool = mirror("short_cycle_relative")
    # same_view: coarse crops keep the view
    scale_jitter: Literal["reference", "same_view"] = mirror("scale_jitter")
    eval_freq: int = mirror("eval_freq")
    # [frames, crop] multiples every shape is rounded to; [] takes them from the model (a ViT's tubelet and
    # patch sizes, so that the token count per batch stays constant; CNNs: none).
    shape_multiple: list[int] = field(default_factory=list)
    # Which schedule of the family: the paper's ordered cycles, its random-shape ablation (seeded by
    # train.seed), or progressive resizing (FFCV / composer: the baseline's epochs and LR, crops growing
    # from progressive_start_scale to full at progressive_ramp_end of the run; the cycles are unused).
    schedule: Literal["multigrid", "random", "progressive"] = "multigrid"
    # The closing phase, beyond the paper (defaults: the reference). False: fine-tune at the full shape
    # only; a fraction > 0: fine-tune for that share of the baseline's epochs, uncompressed.
    finetune_short_cycle: bool = mirror("finetune_short_cycle")
    finetune_fraction: float = mirror("finetune_fraction")
    progressive_start_scale: float = mirror("start_scale", ProgressiveConfig)
    progressive_ramp_end: float = mirror("ramp_end", ProgressiveConfig)
    progressive_crop_step: int = mirror("crop_step", ProgressiveConfig)
    # Each shape's batch: 'flops' (∝ 1 / (T·S²), the reference's) or 'measured' (a step costs what a full
    # step costs, from `cost_table`: `mgvideo profile MODEL --config RECIPE --json` rows). The path is a
    # runtime key: the schedule it yields is fingerprinted, so a moved file resumes, a re-measured one not.
    batch_rule: Literal["flops", "measured"] = added("flops")
    cost_table: str = runtime("")

    def validate(self, where: str) -> None:
        if (self.batch_rule == "measured") != bool(self.cost_table):
            raise ConfigError(f"{where}: multigrid.batch_rule: measured needs multigrid.cost_table (a file "
                              "of `mgvideo profile MODEL --config RECIPE --json` rows), and a cost_table "
                              f"needs batch_rule: measured; got batch_rule {self.batch_rule!r}, "
                              f"cost_table {self.cost_table!r}")
        if self.batch_rule == "measured" and self.schedule == "progressive":
            raise ConfigError(f"{where}: multigrid.batch_rule: measured sizes the multigrid and random "
                              "schedules' batches; progressive keeps one batch (use batch_rule: flops)")
        if self.shape_multiple and (len(self.shape_multiple) != 2 or min(self.shape_multiple) < 1):
            raise ConfigError(f"{where}: multigrid.shape_multiple must be [] or [frames, crop] multiples "
                              f">= 1, got {self.shape_multiple}")


@dataclass
class SolverConfig:
    """Optimisation: the global batch (all devices), the LR schedule and SGD."""

    batch_size: int = 64
    base_lr: float = 0.1
    lr_policy: Literal["steps", "cosine"] = mirror("lr_policy")
    steps: list[int] = mirror("steps")
    max_epoch: int = mirror("max_epoch")
    gamma: float = mirror("gamma")
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
    # global batch and LR (each device holds several recipe devices' clips, in the same BN groups),
    # `linear_lr` keeps the per-device batch and scales the LR with the global batch (engine/device.py).
    recipe_devices: int = 0
    device_scaling: Literal["accumulate", "linear_lr"] = "accumulate"
    accumulate: int = 1  # passes per optimizer step on each device, gradients summed
    # At most this many clips in one forward/backward pass (0: no limit): the step is split into the fewest
    # passes that hold the schedule's largest batch within it, the same count for every shape. Memory only:
    # a limit that would change the BN groups is an error. Passes change summation order and dropout draws.
    max_clips_per_pass: int = runtime(0)
    optimizer: Literal["sgd", "adamw"] = "sgd"  # adamw: VideoMAE's fine-tuning (betas; momentum unused)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    layer_decay: float = 1.0  # layer-wise LR decay for ViTs: block i gets decay^(depth + 1 - (i + 1))
    # The multigrid LR multiplier of a B-times larger batch: B (linear, the reference) or sqrt(B).
    lr_batch_scaling: Literal["linear", "sqrt", "none"] = "linear"

    def validate(self, where: str) -> None:
        _check_signs(where, "solver", self, positive=("batch_size", "base_lr", "accumulate"),
                     non_negative=("warmup_epochs", "warmup_start_lr", "weight_decay", "clip_grad_norm",
                                   "momentum", "recipe_devices", "max_clips_per_pass"))
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"{where}: solver.label_smoothing must be in [0, 1), "
                              f"got {self.label_smoothing}")
        if self.nesterov and self.momentum == 0 and self.optimizer == "sgd":
            raise ConfigError(f"{where}: solver.nesterov needs solver.momentum > 0")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"{where}: solver.layer_decay must be in (0, 1], got {self.layer_decay}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"{where}: solver.betas needs two values in [0, 1), got {self.betas}")


@dataclass
class TrainConfig:
    """Run-time behaviour: device, precision, evaluation and checkpoint cadence."""

    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = runtime("auto")
    amp: Literal["auto", "none", "bf16", "fp16"] = "auto"  # auto: bf16 on CUDA where supported, else none
    channels_last: bool = True
    compile: bool = runtime(False)
    pin_memory: bool = runtime(True)
    # Precise BN uses min(precise_bn_batches, ceil(precise_bn_clips / global batch)) training
    # batches of the shape it refreshes. The reference counts batches only (200; at a coarse stage's
    # large batch that is many clips): precise_bn_clips 0 keeps that; > 0 caps the cost in clips.
    precise_bn_batches: int = 200
    precise_bn_clips: int = 0
    eval_period_samples: int = 0  # 0: the reference cadence (eval_freq per stage)
    eval_batch_size: int = runtime(0)  # 0: the solver's batch per device (per pass when a step takes several)
    checkpoint_minutes: float = runtime(10.0)
    checkpoint_every_iters: int = runtime(0)  # 0: off; small values make resume tests fast
    log_period: int = runtime(10)
    # Single-stage runs: evaluate (with precise BN) and keep checkpoints/epoch_NNN.pt every this many
    # epochs, as PySlowFast's TRAIN.EVAL_PERIOD; 0: the reference cadence (multigrid.eval_freq).
    eval_period: int = 0
    # > 0: evaluate at this many evenly spaced iterations of the run's own schedule, the last one after
    # its final iteration (the benchmark's protocol); 0: off
    eval_points: int = 0
    # The torch.distributed rendezvous store's and collectives' timeout: how long a rank waits for the others.
    dist_timeout_minutes: float = runtime(10.0)

    def validate(self, where: str) -> None:
        _check_signs(where, "train", self, positive=("log_period", "dist_timeout_minutes"),
                     non_negative=("precise_bn_batches", "precise_bn_clips", "eval_period_samples",
                                   "eval_batch_size", "eval_points", "checkpoint_minutes",
                                   "checkpoint_every_iters", "eval_period"))
        cadences = [f"train.{k}" for k in ("eval_period", "eval_points", "eval_period_samples")
                    if getattr(self, k)]
        if len(cadences) > 1:
            raise ConfigError(f"{where}: set one evaluation cadence, not {' and '.join(cadences)}")


@dataclass
class TestConfig:
    """Multi-view testing: `clips` temporal × `crops` spatial views per video (runtime knobs all)."""

    clips: int = runtime(10)
    crops: int = runtime(3)
    crop_size: int = runtime(0)  # 0: data.crop
    ensemble: Literal["auto", "sum", "max"] = runtime("auto")  # auto: max for multi-label data, else sum
    batch_size: int = runtime(8)
    # Val and test drop (and name) a video none of whose views can be read; above this fraction of the
    # videos the evaluation stops with an error instead of reporting on what is left.
    max_failed_fraction: float = runtime(0.05)

    def validate(self, where: str) -> None:
        _check_signs(where, "test", self, positive=("clips", "crops", "batch_size"),
                     non_negative=("crop_size",))
        if not 0.0 <= self.max_failed_fraction <= 1.0:
            raise ConfigError(f"{where}: test.max_failed_fraction must be in [0, 1], "
                              f"got {self.max_failed_fraction}")


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
        """Whether the dataset's format is multi-label (Charades: sigmoid, mAP, max ensembling)."""
        from mgvideo.data.formats import dataset_format

        return dataset_format(self.data.dataset).multi_label


def runtime_keys() -> frozenset[str]:
    """The dotted keys of the fields marked `runtime`: excluded from the resume fingerprint."""
    cfg = Config()
    return frozenset(f"{s.name}.{f.name}" for s in dataclasses.fields(cfg)
                     for f in dataclasses.fields(getattr(cfg, s.name)) if f.metadata.get("runtime"))


def added_defaults() -> dict[str, Any]:
    """The dotted keys of the fields marked `added`, with their defaults."""
    cfg = Config()
    return {f"{s.name}.{f.name}": f.default for s in dataclasses.fields(cfg)
            for f in dataclasses.fields(getattr(cfg, s.name)) if f.metadata.get("added")}


def load_config(path: str | Path | None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Read a YAML recipe (or the defaults if `path` is None), apply `key=value` overrides, validate."""
    if path is None:
        return build_config({}, {}, "<defaults>", map(parse_override, overrides))
    raw, lines = read_yaml(Path(path))
    return build_config(raw, lines, str(path), map(parse_override, overrides))


def build_config(raw: dict[str, Any], lines: dict[str, int], source: str,
                 overrides: Iterable[tuple[str, Any]]) -> Config:
    """The config of a recipe's sections (`raw`, keys at `lines` of `source`), then the parsed command-line
    overrides, validated; an error names the key's line, or the command line."""
    cfg = Config()
    for name, values in raw.items():
        if not isinstance(values, dict):
            raise ConfigError(f"{source}:{lines.get(name, '?')}: section '{name}' must be a mapping")
        for key, value in values.items():
            assign(cfg, f"{name}.{key}", value, f"{source}:{lines.get(f'{name}.{key}', '?')}")
    for key, value in overrides:
        assign(cfg, key, value, "command line")
        lines[key] = 0  # from now on this key comes from the command line
    try:
        validate(cfg, source)
    except ConfigError as err:  # name the line of the key at fault, or the command line
        named = [k for k in lines if "." in k and (f"{k} " in str(err) or f"{k}:" in str(err))]
        if not named:
            raise
        where = f"{source}:{lines[named[0]]}" if lines[named[0]] else "command line"
        raise ConfigError(str(err).replace(f"{source}: ", f"{where}: ", 1)) from err
    return cfg


def override(cfg: Config, **dotted: Any) -> Config:
    """A copy of `cfg` with fields replaced, e.g. `override(cfg, **{"solver.max_epoch": 2})`; validated."""
    new = from_dict(to_dict(cfg))
    for key, value in dotted.items():
        assign(new, key, value, "override")
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
            assign(cfg, f"{section}.{key}", value, "<dict>")
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
    skip, added_keys = runtime_keys(), added_defaults()
    flat = {k: v for k, v in _flatten(to_dict(cfg)).items()
            if k not in skip and not (k in added_keys and v == added_keys[k])}
    blob = json.dumps([flat, extra], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def config_changes(saved: dict[str, Any] | None, cfg: Config) -> list[str]:
    """'key: old -> new' for every fingerprinted key where `cfg` differs from a saved `to_dict` config
    (a checkpoint's); [] when nothing was saved or nothing differs (then the schedule itself changed)."""
    if not isinstance(saved, dict):
        return []
    old, new, skip = {**added_defaults(), **_flatten(saved)}, _flatten(to_dict(cfg)), runtime_keys()
    keys = sorted(k for k in set(old) | set(new) if k not in skip and old.get(k) != new.get(k))
    return [f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in keys]


def validate(cfg: Config, source: str = "<config>") -> None:
    """Each section's range checks, the schedule's checks of its inputs, then the checks across sections that
    types alone cannot express."""
    for section in dataclasses.fields(cfg):
        getattr(cfg, section.name).validate(source)
    check_config(cfg, source)
    if cfg.train.eval_period and cfg.multigrid.long_cycle:
        raise ConfigError(f"{source}: train.eval_period is for single-stage runs (multigrid.long_cycle: "
                          "false); a multigrid run evaluates per stage (multigrid.eval_freq)")


# ---- helpers ---------------------------------------------------------------------------------------


def _check_signs(where: str, prefix: str, section: Any, positive: tuple[str, ...] = (),
                 non_negative: tuple[str, ...] = ()) -> None:
    for name in positive:
        if (value := getattr(section, name)) <= 0:
            raise ConfigError(f"{where}: {prefix}.{name} must be positive, got {value}")
    for name in non_negative:
        if (value := getattr(section, name)) < 0:
            raise ConfigError(f"{where}: {prefix}.{name} must be >= 0, got {value}")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and not prefix:
            out.update(_flatten(value, f"{key}."))
        else:
            out[prefix + key] = value
    return out


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
