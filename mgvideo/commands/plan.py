"""`mgvideo plan`: print (or plot, or dump as JSON) a multigrid schedule and what it saves.

The table, summary, JSON and plot functions take a `MultigridSchedule`, an `LRConfig` and the loader
numbers, so a trainer config can feed them as well as the command-line flags.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

from mgvideo.errors import ConfigError, ScheduleError
from mgvideo.multigrid import (
    LRConfig,
    MultigridConfig,
    MultigridSchedule,
    bn_groups_for,
    iterations_per_epoch,
    lr_at,
)
from mgvideo.multigrid.fit import check_dataset_fits
from mgvideo.multigrid.lr import policy_lr
from mgvideo.multigrid.schedule import Stage

K400_STEPS = (0, 94, 154, 196)
# Kinetics-400 training clips as used by PySlowFast runs: 240436 / 64 gives the 3756 iterations per
# epoch logged in SlowFast issue #277 (the full K400 list has 246535; downloads miss some).
K400_TRAIN_SIZE = 240436


@dataclass(frozen=True)
class LoaderNumbers:
    """What turns epochs into iterations: clips per epoch, base per-device batch, devices, BN group size."""

    dataset_size: int = K400_TRAIN_SIZE
    batch_size: int = 8
    devices: int = 8
    bn_base_size: int = 8


# -- flag parsing -------------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError
    return value


def _int_list(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(",") if x.strip())


def _float_list(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(","))


def _pairs(text: str) -> tuple[tuple[float, float], ...]:
    pairs = tuple(_float_list(p) for p in text.split(";"))
    if any(len(p) != 2 for p in pairs):
        raise ValueError
    return pairs


_int_list.__name__ = "comma-separated integers"
_float_list.__name__ = "comma-separated numbers"
_pairs.__name__ = "';'-separated t,s pairs"
_positive_int.__name__ = "positive integer"


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def configs_from_args(args: argparse.Namespace) -> tuple[MultigridConfig, LRConfig, LoaderNumbers]:
    """The schedule, LR and loader inputs named by the command-line flags."""
    defaults = MultigridConfig()
    steps = args.steps if args.steps is not None else (K400_STEPS if args.lr_policy == "steps" else ())
    cfg = MultigridConfig(
        frames=args.frames, crop=args.crop, steps=steps, max_epoch=args.max_epoch, gamma=args.gamma,
        lr_policy=args.lr_policy, long_cycle=args.long_cycle, short_cycle=args.short_cycle,
        epoch_factor=args.epoch_factor,
        long_cycle_factors=args.long_cycle_factors or defaults.long_cycle_factors,
        short_cycle_factors=args.short_cycle_factors or defaults.short_cycle_factors,
        sampling_rate=args.sampling_rate, short_cycle_relative=args.short_cycle_relative)
    try:
        lr_cfg = LRConfig(base_lr=args.base_lr, warmup_epochs=args.warmup_epochs,
                          warmup_start_lr=args.warmup_start_lr, rescale_warmup=args.rescale_warmup)
    except ConfigError as err:
        raise ConfigError(f"{_flag(str(err).split(':')[0])}: {str(err).split(': ', 1)[1]}") from None
    return cfg, lr_cfg, LoaderNumbers(args.dataset_size, args.batch_size, args.devices, args.bn_base_size)


def configs_from_recipe(args: argparse.Namespace) -> tuple[MultigridSchedule, LRConfig, LoaderNumbers]:
    """The schedule, LR and per-device batch of a trainer recipe, exactly as `mgvideo train` builds them."""
    from mgvideo.config import load_any_config, resolve_recipe
    from mgvideo.engine.builders import build_lr_config, build_schedule, per_device_batch
    from mgvideo.models.zoo import PRESETS

    cfg = load_any_config(resolve_recipe(args.config), args.overrides)  # a bench config: its multigrid run
    no_bn = PRESETS[cfg.model.name].family == "vit"  # a transformer: BN size 0 prints "none"
    loader = LoaderNumbers(args.dataset_size, per_device_batch(cfg, args.devices), args.devices,
                           0 if no_bn else cfg.model.bn_base_size)
    return build_schedule(cfg), build_lr_config(cfg, args.devices), loader


def devices_line(args: argparse.Namespace, lr_cfg: LRConfig, loader: LoaderNumbers) -> str:
    """What `--devices N` means for the run: per-device batch, micro-batches, global batch and LR."""
    if args.config is None:
        return (f"devices: {loader.devices}; per-device batch {loader.batch_size}; global batch "
                f"{loader.batch_size * loader.devices}; base LR {lr_cfg.base_lr:g}")
    from mgvideo.config import load_any_config, resolve_recipe
    from mgvideo.engine.builders import device_plan

    cfg = load_any_config(resolve_recipe(args.config), args.overrides)
    return device_plan(cfg, args.devices).describe(cfg.solver.base_lr)


# -- what is printed ----------------------------------------------------------------------------------
def bn_groups(per_device_batch: int, bn_base_size: int, devices: int) -> str:
    """BN layout of a per-device long-cycle batch: the plan the trainer applies (`bn_groups_for`); "none"
    for a model without BN (`bn_base_size` 0)."""
    if bn_base_size == 0:
        return "none"
    plan = bn_groups_for(per_device_batch, per_device_batch, bn_base_size, devices)
    if plan.sync_size > 1:
        return f"sync×{plan.sync_size}"
    return f"sub×{plan.groups}" if plan.groups > 1 else "BN"


def stage_lrs(schedule: MultigridSchedule, lr_cfg: LRConfig, stage: Stage) -> str:
    """The LR over a stage (after warmup): one value, or the values it steps or anneals through."""
    if schedule.cfg.lr_policy == "cosine":
        epochs = [stage.start_epoch, max(stage.end_epoch - 1, stage.start_epoch)]
    else:
        epochs = [stage.start_epoch] + [s for s in schedule.steps if stage.start_epoch < s < stage.end_epoch]
    values = [policy_lr(e, schedule, lr_cfg) for e in epochs]
    values = [v for i, v in enumerate(values) if i == 0 or v != values[i - 1]]
    return "→".join(f"{v:.3g}" for v in values)


def stage_iterations(stage: Stage, loader: LoaderNumbers) -> int:
    """Iterations per epoch of a stage on each device."""
    factors = [slot.batch_factor for slot in stage.slots]
    return iterations_per_epoch(loader.dataset_size, loader.batch_size, loader.devices, factors)


def schedule_table(schedule: MultigridSchedule, lr_cfg: LRConfig, loader: LoaderNumbers) -> str:
    """One row per stage: LR step, epochs, per-device (B,T,S) of each short-cycle slot, BN, LR, it/epoch."""
    header = ("stage", "LR step", "epochs", "per-device (B,T,S) per slot", "BN groups", "LR", "it/epoch")
    rows = [header]
    for stage in schedule.stages:
        name = f"{stage.index}" + (" (FT)" if stage.finetune else "")
        slots = " ".join(f"({loader.batch_size * s.batch_factor},{s.frames},{s.crop})" for s in stage.slots)
        rows.append((name, str(stage.lr_step), f"{stage.start_epoch}-{stage.end_epoch}", slots,
                     bn_groups(loader.batch_size * stage.batch_factor, loader.bn_base_size, loader.devices),
                     stage_lrs(schedule, lr_cfg, stage), str(stage_iterations(stage, loader))))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows)


def summary(schedule: MultigridSchedule, lr_cfg: LRConfig, loader: LoaderNumbers) -> str:
    """Savings against the baseline recipe (same inputs, no multigrid)."""
    cfg = schedule.cfg
    per_epoch = iterations_per_epoch(loader.dataset_size, loader.batch_size, loader.devices)
    baseline_iters = cfg.max_epoch * per_epoch
    iters = sum(s.epochs * stage_iterations(s, loader) for s in schedule.stages)
    warmup = lr_cfg.warmup_epochs * (schedule.epoch_stretch if lr_cfg.rescale_warmup else 1.0)
    return "\n".join([
        f"epochs: {schedule.max_epoch} (baseline {cfg.max_epoch}); LR steps {list(schedule.steps)}",
        f"warmup: {lr_cfg.warmup_start_lr:g} -> {lr_at(warmup, schedule, lr_cfg):.3g} over {warmup:g} epochs",
        f"iteration saving (reference definition, before fine-tuning): {schedule.iteration_saving:.4g}x",
        f"iterations: {iters} vs baseline {baseline_iters} ({baseline_iters / iters:.3g}x fewer; "
        f"{schedule.speedup():.3g}x in baseline-epoch units)",
        f"FLOPs vs baseline: {schedule.flop_ratio():.3f} (assumes cost per clip ∝ T·S², every clip seen "
        "once per epoch, a slot's share of clips = its share of the cycle's batch)",
    ])


def counted_flop_ratio(args: argparse.Namespace, schedule: MultigridSchedule) -> str:
    """For a ViT recipe, the FLOP ratio with each shape's cost counted on the model (attention is
    quadratic in tokens, so T·S² overstates coarse shapes); '' for other models."""
    from mgvideo.config import load_any_config, resolve_recipe
    from mgvideo.models.flops import clip_cost_fn
    from mgvideo.models.zoo import PRESETS

    cfg = load_any_config(resolve_recipe(args.config), args.overrides)
    if PRESETS[cfg.model.name].family != "vit":
        return ""
    cost = clip_cost_fn(cfg.model.name, cfg.data.num_classes, **cfg.model.options)
    return (f"FLOPs vs baseline counted on {cfg.model.name} (attention's quadratic cost in tokens included): "
            f"{schedule.flop_ratio(cost):.3f}")


def plot(schedule: MultigridSchedule, lr_cfg: LRConfig, loader: LoaderNumbers, path: Path) -> None:
    """Draw frames, crop, per-device batch and LR against epoch into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = list(range(schedule.max_epoch + 1))
    stages = [schedule.stage_at(e) for e in epochs]
    fig, (ax_shape, ax_batch, ax_lr) = plt.subplots(3, 1, sharex=True, figsize=(9, 8))
    ax_shape.step(epochs, [s.crop for s in stages], where="post", label="crop S", color="C1")
    ax_shape.set_ylabel("long-cycle crop S")
    ax_frames = ax_shape.twinx()
    ax_frames.step(epochs, [s.frames for s in stages], where="post", label="frames T", color="C0")
    ax_frames.set_ylabel("long-cycle frames T")
    ax_frames.legend(loc="lower right", fontsize=8)
    for slot in range(max(len(s.slots) for s in schedule.stages)):
        batch = [loader.batch_size * s.slots[min(slot, len(s.slots) - 1)].batch_factor for s in stages]
        ax_batch.step(epochs, batch, where="post", label=f"short-cycle slot {slot}")
    ax_batch.set_yscale("log", base=2)
    ax_batch.set_ylabel("per-device batch")
    fine = [e / 10 for e in range(10 * schedule.max_epoch)]
    ax_lr.plot(fine, [lr_at(e, schedule, lr_cfg) for e in fine], label=f"{schedule.cfg.lr_policy} LR")
    ax_lr.set_yscale("log")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("epoch")
    for ax in (ax_shape, ax_batch, ax_lr):
        for end in schedule.stage_ends()[:-1]:
            ax.axvline(end, color="grey", lw=0.5, alpha=0.5)
        ax.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"multigrid schedule: {len(schedule.stages)} stages, {schedule.max_epoch} epochs, "
                 f"{schedule.speedup():.2f}x fewer iterations")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# -- the command --------------------------------------------------------------------------------------
def register(subparsers) -> None:
    """Add `mgvideo plan` and its flags."""
    p = subparsers.add_parser("plan", help="print, plot or dump a multigrid schedule",
                              description="Defaults: Kinetics SlowFast 8x8 stepwise recipe (spec §1.5).")
    p.add_argument("--frames", type=_positive_int, default=32, help="default clip length T")
    p.add_argument("--crop", type=_positive_int, default=224, help="default crop S")
    p.add_argument("--sampling-rate", type=_positive_int, default=2)
    p.add_argument("--steps", type=_int_list, default=None,
                   help="baseline LR steps in epochs (default 0,94,154,196; with cosine: equal slices)")
    p.add_argument("--max-epoch", type=int, default=239)
    p.add_argument("--gamma", type=float, default=0.1)
    p.add_argument("--epoch-factor", type=float, default=1.5)
    p.add_argument("--long-cycle-factors", type=_pairs, default=None,
                   help='(t, s) pairs, e.g. "0.25,0.7071;0.5,0.7071;0.5,1;1,1"')
    p.add_argument("--short-cycle-factors", type=_float_list, default=None, help='e.g. "0.5,0.7071"')
    p.add_argument("--no-long-cycle", dest="long_cycle", action="store_false")
    p.add_argument("--no-short-cycle", dest="short_cycle", action="store_false")
    p.add_argument("--short-cycle-relative", action="store_true",
                   help="short-cycle crops from the current crop, not the default one (issue #429)")
    p.add_argument("--lr-policy", choices=("steps", "cosine"), default="steps")
    p.add_argument("--base-lr", type=float, default=0.1)
    p.add_argument("--warmup-epochs", type=float, default=34.0)
    p.add_argument("--warmup-start-lr", type=float, default=0.01)
    p.add_argument("--rescale-warmup", action="store_true",
                   help="stretch warmup by the multigrid epoch factor")
    p.add_argument("--dataset-size", type=_positive_int, default=K400_TRAIN_SIZE)
    p.add_argument("--batch-size", type=_positive_int, default=8, help="base per-device batch")
    p.add_argument("--devices", type=_positive_int, default=8,
                   help="devices to plan for; with --config, the recipe's batch and LR are mapped onto them "
                        "as solver.device_scaling says (accumulation or linear LR scaling)")
    p.add_argument("--bn-base-size", type=_positive_int, default=8)
    p.add_argument("--config", type=Path, metavar="CONFIG",
                   help="read the schedule, LR and batch from a trainer recipe (the schedule flags are "
                        "then ignored); --dataset-size and --devices still apply")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for --config")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="also draw shape, batch and LR against epoch")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Build the schedule from the flags and print the table (or JSON), optionally plotting it."""
    if args.config is not None:
        schedule, lr_cfg, loader = configs_from_recipe(args)
    elif args.overrides:
        raise ConfigError(f"key=value overrides need --config (got {args.overrides[0]!r})")
    else:
        cfg, lr_cfg, loader = configs_from_args(args)
        try:
            schedule = MultigridSchedule(cfg)
        except ScheduleError as err:
            field, _, problem = str(err).partition(": ")
            raise ScheduleError(f"{_flag(field)}: {problem}") from None
    if loader.dataset_size < loader.devices:
        raise ConfigError(f"--dataset-size: {loader.dataset_size} clips cannot be shared by "
                          f"{loader.devices} devices")
    check_dataset_fits(schedule, loader.dataset_size, loader.batch_size, loader.devices)
    if args.plot is not None:
        if args.plot.suffix.lower() != ".png":
            raise ConfigError(f"--plot: expected a .png file name (got {str(args.plot)!r})")
        plot(schedule, lr_cfg, loader, args.plot)
    if args.json:
        print(json.dumps(schedule.to_dict()))
    else:
        print(schedule_table(schedule, lr_cfg, loader))
        print()
        print(summary(schedule, lr_cfg, loader))
        print(devices_line(args, lr_cfg, loader))
        if args.config is not None and (line := counted_flop_ratio(args, schedule)):
            print(line)
        if args.plot is not None:
            print(f"plot: {args.plot}")
    return 0
