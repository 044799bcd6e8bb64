"""`mgvideo plan`: the command's front end. It reads the config to plan (the --config recipe with key=value
overrides, or the default recipe with the schedule flags as shorthands for its keys) once, builds it as
`mgvideo train` builds it into a `PlanInputs`, refuses what `train` would refuse, and hands it to
`mgvideo.engine.plan_report` for the table, summary, JSON and /dev/shm lines (and to plots for --plot).
Flags alone plan the schedule they describe, PySlowFast's to the epoch: no model's shape multiple unless
--model names one.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mgvideo.bench.bench_config import load_any_config
from mgvideo.config import Config, load_config, override, resolve_recipe
from mgvideo.data.formats import K400_TRAIN_SIZE, dataset_format
from mgvideo.engine import plan_report, plan_rules
from mgvideo.engine.plan_report import LoaderNumbers, PlanInputs
from mgvideo.errors import ConfigError, MgvideoError, ScheduleError
from mgvideo.multigrid import MultigridSchedule
from mgvideo.multigrid.fit import check_dataset_fits
from mgvideo.multigrid.lr import check_warmup_of
from mgvideo.schedule_keys import SCHEDULE_KEYS, Flag, positive_int

# -- flags --------------------------------------------------------------------------------------------
# Without --config, `plan` plans this recipe (PySlowFast's SLOWFAST_8x8_R50_stepwise_multigrid) on 8
# devices, with the schedule flags below as shorthands for the config keys they set.
DEFAULT_RECIPE = "kinetics/slowfast_r50_8x8_multigrid"
FLAG_DEVICES = 8
# Each flag that is a shorthand for a config key: the schedule's, from the table's rows that have a flag
# (mgvideo/schedule_keys.py), then the LR rule's, the loader's and the model's. --batch-size is per
# device: solver.batch_size is that times --devices. Beside --config such a flag is an error: the recipe
# sets that key.
FLAGS: tuple[tuple[str, str, Flag], ...] = tuple(
    (r.field, r.key, r.flag) for r in SCHEDULE_KEYS if r.flag) + (
    ("base_lr", "solver.base_lr", Flag(float, "(0.1)")),
    ("warmup_epochs", "solver.warmup_epochs",
     Flag(float, "(34, the Kinetics recipe's; 0, PySlowFast's default, where --steps or --max-epoch describe "
                 "another run)")),
    ("warmup_start_lr", "solver.warmup_start_lr", Flag(float, "(0.01)")),
    ("rescale_warmup", "solver.rescale_warmup",
     Flag(const=True, help="stretch warmup by the multigrid epoch factor")),
    ("batch_size", "solver.batch_size", Flag(positive_int, "base per-device batch (8)")),
    ("bn_base_size", "model.bn_base_size", Flag(positive_int, "clips per BN group (8)")),
    ("model", "model.name",
     Flag(metavar="NAME", help="round shapes to this zoo model's multiple (a SlowFast's alpha, a ViT's "
                               "tubelet and patch), as training it would; default: none, the schedule "
                               "alone")),
)
FLAG_KEYS = {name: key for name, key, _ in FLAGS}
# What a schedule error calls the model's shape multiple, written as the flag that brings it in.
MULTIPLE_WORDS = ("multigrid.shape_multiple", "shape_multiple")


_OPTIONS = {name: flag.option(name) for name, _, flag in FLAGS}


def _flag(name: str) -> str:
    return _OPTIONS[name]


def refuse_ignored_flags(args: argparse.Namespace) -> None:
    """With --config the recipe decides the schedule: a schedule flag beside it is an error, not dropped."""
    for name, key in FLAG_KEYS.items():
        if getattr(args, name) is not None:
            raise ConfigError(f"{_flag(name)}: not used with --config (the recipe sets {key}); "
                              f"give it as an override instead, e.g. {key}=...")


def flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The config keys the schedule flags set on the default recipe (the devices and batch always).

    Flags describe a schedule, not the recipe's model: without --model its shapes are PySlowFast's, whole
    frames and pixels, not SlowFast's frame multiple. The recipe's 34-epoch warmup belongs to its 239-epoch
    run; flags that set another run length get none (PySlowFast's default) unless --warmup-epochs says.
    """
    dotted = {key: getattr(args, name) for name, key in FLAG_KEYS.items() if getattr(args, name) is not None}
    if args.lr_policy == "cosine" and args.steps is None:
        dotted["solver.steps"] = []  # cosine without steps: the schedule cuts equal slices
    if args.model is None:
        dotted["multigrid.shape_multiple"] = [1, 1]
    if args.warmup_epochs is None and (args.steps is not None or args.max_epoch is not None):
        dotted["solver.warmup_epochs"] = 0.0
    devices = args.devices or FLAG_DEVICES
    dotted["solver.batch_size"] = (args.batch_size or 8) * devices
    dotted["solver.recipe_devices"] = devices
    return dotted


def name_flags(err: MgvideoError) -> MgvideoError:
    """The error with each config key it names written as the flag that sets it (plans without --config)."""
    text = str(err).removeprefix("override: ")
    for name, key in FLAG_KEYS.items():
        text = re.sub(rf"(?<![\w.]){re.escape(key)}(?!\w)", _flag(name), text)
    for word in MULTIPLE_WORDS:
        text = re.sub(rf"(?<![\w.]){re.escape(word)}(?!\w)", "--model (its shape multiple)", text)
    return type(err)(text)


# -- the config, what it plans and what is refused ---------------------------------------------------
def plan_config(args: argparse.Namespace) -> Config:
    """The config to plan, read once: the --config recipe (a bench config: its multigrid run) with its
    key=value overrides or, without --config, the default recipe with the schedule flags applied."""
    if args.config is not None:
        refuse_ignored_flags(args)
        return load_any_config(resolve_recipe(args.config), args.overrides)
    if args.overrides:
        raise ConfigError(f"key=value overrides need --config (got {args.overrides[0]!r})")
    try:
        return override(load_config(resolve_recipe(DEFAULT_RECIPE)), **flag_overrides(args))
    except ConfigError as err:
        raise name_flags(err) from None


def recipe_dataset_size(cfg: Config) -> tuple[int, str]:
    """Clips in the recipe's training list, and where that figure came from (the list, or, when it is
    not here, the published size of the dataset it names: its format's `known_size`, what PySlowFast runs
    use)."""
    from mgvideo.data.prepare import read_split

    path, fmt = Path(cfg.data.root) / cfg.data.train_list, dataset_format(cfg.data.dataset)
    try:
        return len(read_split(cfg, cfg.data.train_list).records), f"the videos listed in {path}"
    except MgvideoError:
        if fmt.generated:
            from mgvideo.data.synthetic import SIZES

            spec = SIZES.get(cfg.data.synthetic_size)
            if spec is not None:
                return spec.train_per_class * cfg.data.num_classes, (
                    f"the synthetic '{cfg.data.synthetic_size}' set, not generated yet")
        if fmt.known_size is None:
            raise ConfigError(f"--dataset-size: {path} is not here to count; give --dataset-size N") from None
        size, what = fmt.known_size
        return size, f"{what} ({path} is not here; --dataset-size N to change)"


def plan_inputs(cfg: Config, args: argparse.Namespace) -> PlanInputs:
    """The schedule, LR, per-device batch and passes of the config, exactly as `mgvideo train` builds them,
    and where the clip count came from: --devices, else the recipe's `solver.recipe_devices`, else one;
    clips from --dataset-size, else the recipe's training list (without --config: Kinetics-400's). Without
    --config, an error names the flag that set the key."""
    try:
        return _build_inputs(cfg, args)
    except (ConfigError, ScheduleError) as err:
        raise (err if args.config else name_flags(err)) from None


def _build_inputs(cfg: Config, args: argparse.Namespace) -> PlanInputs:
    """`plan_inputs` without the renaming of errors."""
    from mgvideo.engine.builders import build_lr_config, build_schedule
    from mgvideo.engine.device import device_plan
    from mgvideo.models.zoo import get_preset

    devices = args.devices or cfg.solver.recipe_devices or 1
    dataset_size, source = args.dataset_size, None
    if dataset_size is None:
        dataset_size, source = recipe_dataset_size(cfg) if args.config else (K400_TRAIN_SIZE, None)
    no_bn = get_preset(cfg.model.name).family == "vit"  # a transformer: BN size 0 prints "none"
    schedule = build_schedule(cfg)
    plan = device_plan(cfg, devices, schedule)  # the passes `train` splits each step into
    loader = LoaderNumbers(dataset_size, plan.batch, devices, 0 if no_bn else cfg.model.bn_base_size,
                           plan.micro_batches)
    return PlanInputs(schedule, build_lr_config(cfg, plan.lr_scale), loader, plan, source)


def time_per_clip_fn(profile: Path | None,
                     schedule: MultigridSchedule) -> tuple[Callable[[int, int], float], str]:
    """Seconds per training clip at (frames, crop): from `mgvideo profile --json` rows, else proportional
    to T·S² (the FLOP count). Returns the function and a sentence saying which."""
    if profile is None:
        return (lambda t, s: float(t * s * s)), (
            "assuming time per clip ∝ T·S² (coarse shapes are often less efficient than that; "
            "--profile FILE with `mgvideo profile MODEL --config RECIPE --json` measures it)")
    from mgvideo.engine.cost_table import profile_rows

    try:
        rows = profile_rows(profile, "--profile")  # a JSON list, or the JSON lines `profile --json` prints
        per_clip = {(int(r["frames"]), int(r["crop"])): float(r["sec_per_iter"]) / int(r["batch"])
                    for r in rows}
    except (OSError, ValueError, TypeError, KeyError) as err:
        raise ConfigError(f"--profile: {profile}: not the JSON list `mgvideo profile --json` prints "
                          f"({err})") from None
    needed = {(s.frames, s.crop) for st in schedule.stages for s in st.slots} | {(schedule.cfg.frames,
                                                                                   schedule.cfg.crop)}
    missing = sorted(needed - set(per_clip))
    if missing:
        raise ConfigError(f"--profile: {profile} has no row for T={missing[0][0]}, S={missing[0][1]} "
                          "(profile the same recipe: mgvideo profile MODEL --config RECIPE --json)")
    return (lambda t, s: per_clip[(t, s)]), f"from the per-clip times in {profile}"


def check_plan(p: PlanInputs, args: argparse.Namespace) -> None:
    """Refuse, as `train` would, a plan that cannot run: too few clips for the devices or a stage, or a
    warmup longer than the run; and a plot file that is not a PNG."""
    loader = p.loader
    if loader.dataset_size < loader.devices:
        raise ConfigError(f"--dataset-size: {loader.dataset_size} clips cannot be shared by "
                          f"{loader.devices} devices")
    check_dataset_fits(p.schedule, loader.dataset_size, loader.batch_size, loader.devices)
    try:
        check_warmup_of(p.schedule, p.lr_cfg)
    except ConfigError as err:
        err = ConfigError(f"solver.{err}")
        raise (err if args.config else name_flags(err)) from None
    if args.plot is not None and args.plot.suffix.lower() != ".png":
        raise ConfigError(f"--plot: expected a .png file name (got {str(args.plot)!r})")


# -- the command --------------------------------------------------------------------------------------
DESCRIPTION = """Plan a multigrid run: stages, shapes, iterations, the saving against the baseline and the
expected speed-up in time. With --config, the recipe gives everything (devices: solver.recipe_devices, else 1;
clips: its training list; shapes rounded to its model's multiple). Without it, the flags describe the
schedule alone, PySlowFast's to the epoch (--model NAME rounds shapes to that model's multiple); unset flags
take PySlowFast's Kinetics SlowFast 8x8 stepwise multigrid recipe (kinetics/slowfast_r50_8x8_multigrid) on 8
devices."""


def register(subparsers) -> None:
    """Add `mgvideo plan` and its flags."""
    p = subparsers.add_parser(
        "plan", help="print, plot or dump a multigrid schedule",
        description=DESCRIPTION)
    for name, _, flag in FLAGS:
        flag.add_to(p, name)
    p.add_argument("--dataset-size", type=positive_int,
                   help="training clips (default: the recipe's list; without --config, Kinetics-400's "
                        "240436)")
    p.add_argument("--devices", type=positive_int,
                   help="devices to plan for (default: the recipe's solver.recipe_devices, else 1; without "
                        "--config, 8); the recipe's batch and LR are mapped onto them as "
                        "solver.device_scaling says (accumulation or linear LR scaling)")
    p.add_argument("--config", type=Path, metavar="CONFIG",
                   help="plan a trainer recipe; schedule flags are then an error (use key=value overrides)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for --config")
    p.add_argument("--profile", type=Path, metavar="PROFILE.json",
                   help="`mgvideo profile ... --json` output: the expected speed-up from measured times")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--plot", type=Path, metavar="FILE.png",
                   help="also draw shape, batch and LR against epoch")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Plan the config (the recipe, or the flags) and print the table (or JSON), optionally plotting it."""
    cfg = plan_config(args)
    p = plan_inputs(cfg, args)
    check_plan(p, args)
    per_clip, basis = time_per_clip_fn(args.profile, p.schedule)
    figures = plan_report.plan_figures(p.schedule, p.lr_cfg, p.loader, per_clip, basis)
    devices = plan_report.device_summary(cfg, p.devices, recipe=args.config is not None)
    model_named = args.config is not None or args.model is not None  # else flags: the schedule alone
    shapes = plan_report.shape_multiple_note(cfg, model_named)
    counted = plan_report.counted_flop_ratio(cfg, p.schedule)
    if args.plot is not None:
        from mgvideo.engine.plots import plot_schedule

        plot_schedule(p.schedule, p.lr_cfg, p.loader.batch_size, args.plot)
    rules = plan_rules.compare(cfg, p, args.profile, per_clip) if args.profile else None
    if args.json:
        out = plan_report.plan_json(p, figures, devices, shapes, counted)
        print(json.dumps({**out, "batch_rules": rules} if rules else out))
        return 0
    plan_report.print_plan(cfg, p, figures, devices, shapes, counted)
    if rules:
        print("\n".join(plan_rules.rules_lines(rules, args.profile)))
    if args.plot is not None:
        print(f"plot: {args.plot}")
    return 0
