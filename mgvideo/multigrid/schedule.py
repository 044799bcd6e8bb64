"""The multigrid schedule: long-cycle stages, short-cycle slots, rewritten LR steps and the cost summary.

Pure Python (no torch). For the same inputs it reproduces PySlowFast's `get_long_cycle_schedule` and
`init_multigrid` to the epoch, and it also covers the modes the reference crashes on: long cycle only and
cosine LR (see docs/multigrid.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from mgvideo.errors import ScheduleError
from mgvideo.multigrid.cost import CostTable

SQRT_HALF = 0.5**0.5
DEFAULT_LONG_CYCLE_FACTORS = ((0.25, SQRT_HALF), (0.5, SQRT_HALF), (0.5, 1.0), (1.0, 1.0))
DEFAULT_SHORT_CYCLE_FACTORS = (0.5, SQRT_HALF)
SCALE_JITTER = ("reference", "same_view")


@dataclass(frozen=True)
class ClipShape:
    """What one clip of a batch must look like; the dataset decodes exactly this."""

    frames: int
    crop: int
    min_rate: int  # temporal sampling rate is drawn uniformly from [min_rate, max_rate]
    max_rate: int
    base_crop: int  # the recipe's full crop S; scale jitter shrinks with crop / base_crop
    stage_batch: int  # this device's long-cycle batch of the stage (BN groups follow it)
    stage: int
    slot: int
    same_view: bool = False  # scale jitter shrinks with the crop at both ends (MultigridConfig.scale_jitter)


@dataclass(frozen=True)
class Slot:
    """One short-cycle shape: batch multiplier (relative to the base per-device batch), frames and crop."""

    batch_factor: int
    frames: int
    crop: int


@dataclass(frozen=True)
class Stage:
    """One long-cycle stage: a base shape trained from `start_epoch` up to (excluding) `end_epoch`."""

    index: int
    lr_step: int
    batch_factor: int  # the long-cycle multiplier; the LR scales linearly with it
    frames: int
    crop: int
    start_epoch: int
    end_epoch: int
    slots: tuple[Slot, ...]  # visited one per iteration, in order
    finetune: bool = False

    @property
    def epochs(self) -> int:
        return self.end_epoch - self.start_epoch

    @property
    def mean_batch_factor(self) -> float:
        """Average per-iteration batch multiplier over the short cycle."""
        return sum(s.batch_factor for s in self.slots) / len(self.slots)

    @property
    def mean_clip_cost(self) -> float:
        """Mean per-clip cost T·S² over one epoch (each slot's share of clips is its batch share)."""
        clips = sum(s.batch_factor for s in self.slots)
        return sum(s.batch_factor * s.frames * s.crop**2 for s in self.slots) / clips


@dataclass(frozen=True)
class MultigridConfig:
    """The recipe's inputs. Defaults: PySlowFast's Kinetics SLOWFAST_8x8_R50_stepwise_multigrid."""

    frames: int = 32
    crop: int = 224
    steps: tuple[int, ...] = (0, 94, 154, 196)
    max_epoch: int = 239
    gamma: float = 0.1
    lr_policy: str = "steps"  # 'steps' | 'cosine'
    long_cycle: bool = True
    short_cycle: bool = True
    epoch_factor: float = 1.5
    long_cycle_factors: tuple[tuple[float, float], ...] = DEFAULT_LONG_CYCLE_FACTORS
    short_cycle_factors: tuple[float, ...] = DEFAULT_SHORT_CYCLE_FACTORS
    sampling_rate: int = 2
    # False reproduces the reference (short-cycle crops from the default S); True scales them from the
    # current stage's crop, so every stage gets the full ×4, ×2 cycle (PySlowFast issue #429).
    short_cycle_relative: bool = False
    # Short-side jitter of a smaller crop. 'reference': only the lower bound shrinks with the crop, so
    # small crops are often zoomed-in views (PySlowFast). 'same_view': both bounds shrink, so a coarse
    # clip shows the same field of view as a full one, at a lower resolution.
    scale_jitter: str = "reference"
    eval_freq: int = 3  # evaluations per stage, as the reference's MULTIGRID.EVAL_FREQ
    cosine_end: float = 0.0  # cosine's final LR, relative to the base LR
    cosine_cycles: int = 3  # long cycles when lr_policy='cosine' and no steps are given
    # (frames, crop) multiples every shape is rounded to: a ViT's tubelet and patch sizes, so that token
    # grids stay whole and the batch keeps the token count constant. (1, 1): the reference's rounding.
    shape_multiple: tuple[int, int] = (1, 1)
    # The closing phase (beyond the paper; the defaults are the reference's). finetune_short_cycle=False
    # trains the fine-tuning stage at the full shape only, as the baseline does. finetune_fraction > 0
    # sets its length to that fraction of the baseline's epochs instead of compressing the last LR
    # interval by the iteration saving: a full-shape finish of a user-set share of the budget.
    finetune_short_cycle: bool = True
    finetune_fraction: float = 0.0
    # None: the FLOP rule (batch ∝ 1 / (T·S²), the reference's). A measured table (cost.py): every shape's
    # batch makes a step cost what a full-shape step costs; the LR follows the batch factors it gives.
    cost_table: CostTable | None = None


def _fail(name: str, problem: str, value: object) -> ScheduleError:
    return ScheduleError(f"{name}: {problem} (got {value!r})")


def validate_config(cfg: MultigridConfig, recipe: bool = True) -> None:
    """Raise ScheduleError naming the first invalid field. `recipe=False` checks the values alone, not
    whether the recipe builds (a long cycle's two steps, the full shape against the model's multiple): what
    a config file is checked against when it is read (mgvideo.schedule_keys)."""
    for name in ("frames", "crop", "sampling_rate", "eval_freq", "cosine_cycles"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise _fail(name, "must be a positive integer", value)
    if cfg.scale_jitter not in SCALE_JITTER:
        raise _fail("scale_jitter", f"must be one of {SCALE_JITTER}", cfg.scale_jitter)
    if cfg.lr_policy not in ("steps", "cosine"):
        raise _fail("lr_policy", "must be 'steps' or 'cosine'", cfg.lr_policy)
    steps = list(cfg.steps)
    if cfg.lr_policy == "steps" and not steps:
        raise _fail("steps", "the 'steps' policy needs at least one step, starting at 0", steps)
    if any(not isinstance(s, int) or isinstance(s, bool) for s in steps):
        raise _fail("steps", "must be integer epochs", steps)
    if steps and steps[0] != 0:
        raise _fail("steps", "must start at 0", steps)
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise _fail("steps", "must be strictly increasing", steps)
    # Cosine makes its own steps.
    if recipe and cfg.long_cycle and cfg.lr_policy == "steps" and len(steps) < 2:
        raise _fail("steps", "the long cycle needs two steps or more, e.g. [0, N] (the last LR step "
                    "fine-tunes at the full shape), or the long cycle off", steps)
    if not isinstance(cfg.max_epoch, int) or cfg.max_epoch <= (steps[-1] if steps else 0):
        raise _fail("max_epoch", "must be an integer past the last step", cfg.max_epoch)
    for name in ("gamma", "epoch_factor"):
        if not getattr(cfg, name) > 0:
            raise _fail(name, "must be > 0", getattr(cfg, name))
    if not 0 <= cfg.finetune_fraction <= 1:
        raise _fail("finetune_fraction", "must be in [0, 1] (0: the reference's compressed fine-tuning)",
                    cfg.finetune_fraction)
    if not 0 <= cfg.cosine_end < 1:
        raise _fail("cosine_end", "must be in [0, 1)", cfg.cosine_end)
    if not cfg.long_cycle_factors:
        raise _fail("long_cycle_factors", "needs at least one (t, s) pair", cfg.long_cycle_factors)
    for pair in cfg.long_cycle_factors:
        if len(pair) != 2 or not all(f > 0 for f in pair):
            raise _fail("long_cycle_factors", "each pair must be two factors > 0", pair)
    if not cfg.short_cycle_factors or not all(f > 0 for f in cfg.short_cycle_factors):
        raise _fail("short_cycle_factors", "needs factors > 0", cfg.short_cycle_factors)
    multiple = tuple(cfg.shape_multiple)
    if len(multiple) != 2 or any(not isinstance(m, int) or isinstance(m, bool) or m < 1 for m in multiple):
        raise _fail("shape_multiple", "must be two positive integers (frames, crop)", cfg.shape_multiple)
    if recipe and (cfg.frames % multiple[0] or cfg.crop % multiple[1]):
        raise _fail("shape_multiple", f"the full shape {cfg.frames}x{cfg.crop} must be a multiple of it",
                    cfg.shape_multiple)


def round_to_multiple(value: float, multiple: int) -> int:
    """`value` rounded to the nearest multiple of `multiple` (at least one multiple); plain rounding for 1."""
    if multiple == 1:
        return int(round(value))
    return max(multiple, multiple * int(round(value / multiple)))


def _lr_steps(cfg: MultigridConfig) -> list[int]:
    """The baseline's LR steps; cosine without steps gets `cosine_cycles` equal slices + a fine-tune slice."""
    if cfg.lr_policy == "cosine" and len(cfg.steps) <= 1:
        k = cfg.cosine_cycles
        steps = [round(cfg.max_epoch * i / (k + 1)) for i in range(k + 1)]
        if any(b <= a for a, b in zip(steps, steps[1:])):
            raise _fail("cosine_cycles", f"too many cycles for max_epoch={cfg.max_epoch}", k)
        return steps
    return list(cfg.steps)


class _ShapeRule:
    """Base shapes, short-cycle slots and allocation batch sizes of one recipe."""

    def __init__(self, cfg: MultigridConfig):
        self.cfg = cfg
        self.volume = float(cfg.frames * cfg.crop**2)

    def _batch(self, frames: int, crop: float, what: str) -> int:
        table = self.cfg.cost_table
        if table is not None:  # the measured rule; tables hold whole-pixel crops
            return table.batch_factor(frames, int(round(crop)), (self.cfg.frames, self.cfg.crop))
        b = int(round(self.volume / (frames * crop * crop)))
        if b < 1:
            raise _fail(what, f"shape ({frames}, {crop:g}) exceeds the default; batch factor rounds to 0", b)
        return b

    def base(self, t_factor: float, s_factor: float) -> tuple[int, int, int]:
        """(batch factor, frames, crop) of a long-cycle factor pair."""
        t_multiple, s_multiple = self.cfg.shape_multiple
        frames = round_to_multiple(self.cfg.frames * t_factor, t_multiple)
        crop = round_to_multiple(self.cfg.crop * s_factor, s_multiple)
        if frames < 1 or crop < 1:
            raise _fail("long_cycle_factors", f"({t_factor}, {s_factor}) rounds to {frames} frames, "
                        f"crop {crop}", (t_factor, s_factor))
        return self._batch(frames, crop, "long_cycle_factors"), frames, crop

    def slots(self, b: int, frames: int, crop: int) -> tuple[tuple[Slot, ...], float]:
        """Short-cycle slots of a base shape, plus the reference's average batch used to split epochs."""
        if not self.cfg.short_cycle:
            return (Slot(b, frames, crop),), float(b)
        slots, alloc = [], []
        for f in self.cfg.short_cycle_factors:
            size = f * (crop if self.cfg.short_cycle_relative else self.cfg.crop)
            if self.cfg.shape_multiple[1] > 1:  # whole patches; the reference keeps the float size here
                size = float(round_to_multiple(size, self.cfg.shape_multiple[1]))
            mult = int(round((crop / size) ** 2))
            if round(size) < 1 or mult < 1:
                raise _fail("short_cycle_factors", f"factor {f} gives crop {size:g}, multiplier {mult}", f)
            alloc.append(self._batch(frames, size, "short_cycle_factors"))
            # The FLOP rule multiplies the stage's batch (the reference); a measured table sizes each slot.
            factor = alloc[-1] if self.cfg.cost_table is not None else b * mult
            slots.append(Slot(factor, frames, int(round(size))))
        slots.append(Slot(b, frames, crop))
        alloc.append(b)
        return tuple(slots), sum(alloc) / len(alloc)


def _closing_phase(stages: list[Stage], cfg: MultigridConfig) -> list[Stage]:
    """The fine-tuning stage as the config's closing-phase options make it (unchanged by default)."""
    last = stages[-1]
    slots = last.slots if cfg.finetune_short_cycle else (Slot(last.batch_factor, last.frames, last.crop),)
    epochs = last.epochs
    if cfg.finetune_fraction > 0:
        # Epochs at the full shape's batch: the same iterations as that share of the baseline's epochs.
        epochs = max(1, int(round(cfg.finetune_fraction * cfg.max_epoch * last.batch_factor)))
    if slots == last.slots and epochs == last.epochs:
        return stages
    finish = Stage(last.index, last.lr_step, last.batch_factor, last.frames, last.crop, last.start_epoch,
                   last.start_epoch + epochs, slots, finetune=True)
    return stages[:-1] + [finish]


class MultigridSchedule:
    """The whole multigrid run: stages (epoch -> shape), rewritten LR steps/LRs, max epoch and savings.

    `stages` always holds at least one stage: with the long cycle off it is a single stage (the
    baseline, or the short cycle alone) so that one trainer code path runs every mode. `steps`/`lrs`
    are the rewritten solver steps and relative LRs of the reference (`lrs[i]` applies from `steps[i]`).
    With the cosine policy, `lrs` hold the long-cycle batch multipliers applied on top of the cosine.
    """

    def __init__(self, cfg: MultigridConfig | None = None):
        cfg = cfg or MultigridConfig()
        validate_config(cfg)
        self.cfg = cfg
        self.base_steps = _lr_steps(cfg)
        self.raw_epoch_sum = float("nan")  # reference intermediates; long cycle only
        self.epoch_scale = float("nan")
        if cfg.long_cycle:
            self._build_long_cycle()
        else:
            self._build_single_stage()
        if self.max_epoch < 1:
            raise _fail("epoch_factor", f"the run has no epoch (max_epoch {cfg.max_epoch} x epoch_factor "
                        f"{cfg.epoch_factor:g} rounds to {self.max_epoch})", cfg.epoch_factor)

    # -- construction -------------------------------------------------------------------------------
    def _build_long_cycle(self) -> None:
        cfg, rule = self.cfg, _ShapeRule(self.cfg)
        shapes = [rule.base(t, s) for t, s in cfg.long_cycle_factors]
        slot_sets = [rule.slots(*shape) for shape in shapes]
        avg = [a for _, a in slot_sets]
        steps = self.base_steps
        raw, iters = [], 0.0  # (lr_step, shape index, raw epochs), in the reference's float order
        for k in range(len(steps) - 1):
            length = steps[k + 1] - steps[k]
            for j in range(len(shapes)):
                epochs = length * avg[j] / sum(avg)
                iters += epochs / avg[j]
                raw.append((k, j, epochs))
        self.iteration_saving = steps[-1] / iters
        # Fine-tuning: the last LR interval at the last shape, compressed by the same saving.
        ft_epochs = (cfg.max_epoch - steps[-1]) / self.iteration_saving * avg[-1]
        raw.append((len(steps) - 1, len(shapes) - 1, ft_epochs))
        self.raw_epoch_sum = sum(e for _, _, e in raw)
        self.epoch_scale = cfg.max_epoch * cfg.epoch_factor / self.raw_epoch_sum
        stages, total, start = [], 0.0, 0
        for i, (k, j, epochs) in enumerate(raw):
            total += epochs * self.epoch_scale
            end = int(round(total))
            b, frames, crop = shapes[j]
            last = i == len(raw) - 1
            stages.append(Stage(i, k, b, frames, crop, start, end, slot_sets[j][0], finetune=last))
            start = end
        self._set_stages(_closing_phase(stages, cfg))

    def _set_stages(self, stages: list[Stage]) -> None:
        """Adopt long-cycle `stages` (fine-tuning last) and derive the max epoch, LR steps and LRs."""
        cfg = self.cfg
        self.stages = tuple(stages)
        self.max_epoch = stages[-1].end_epoch
        ends = [s.end_epoch for s in stages]
        if cfg.lr_policy == "cosine":
            self.steps = tuple([0] + ends[:-1])
            self.lrs = tuple(float(s.batch_factor) for s in stages)
        else:
            self.steps = tuple([0] + ends[:-1] + [(ends[-2] + ends[-1]) // 2])
            lrs = [cfg.gamma**s.lr_step * s.batch_factor for s in stages]
            self.lrs = tuple(lrs[:-1] + [lrs[-2], lrs[-1]])

    def _build_single_stage(self) -> None:
        cfg = self.cfg
        stretch = cfg.epoch_factor if cfg.short_cycle else 1.0
        self.max_epoch = int(cfg.max_epoch * stretch)
        slots, _ = _ShapeRule(cfg).slots(1, cfg.frames, cfg.crop)
        self.stages = (Stage(0, 0, 1, cfg.frames, cfg.crop, 0, self.max_epoch, slots),)
        if cfg.lr_policy == "cosine":
            self.steps, self.lrs = (0,), (1.0,)
        else:
            self.steps = tuple(int(s * stretch) for s in self.base_steps)
            self.lrs = tuple(cfg.gamma**k for k in range(len(self.steps)))
        self.iteration_saving = self.stages[0].mean_batch_factor

    # -- queries ------------------------------------------------------------------------------------
    def stage_index(self, epoch: float) -> int:
        """Index of the stage that trains `epoch`: the first ending after it (past the end: the last)."""
        for stage in self.stages:
            if epoch < stage.end_epoch:
                return stage.index
        return self.stages[-1].index

    def stage_at(self, epoch: float) -> Stage:
        """The stage that trains `epoch`."""
        return self.stages[self.stage_index(epoch)]

    def step_index(self, epoch: float) -> int:
        """Index into `steps`/`lrs` in force at the (fractional) epoch."""
        index = 0
        for i, step in enumerate(self.steps):
            if epoch >= step:
                index = i
        return index

    def relative_lr(self, epoch: float) -> float:
        """LR relative to the base LR at a fractional epoch, before warmup.

        'steps': the reference's rewritten LRs (γ^step × long-cycle batch multiplier). 'cosine' (our
        variant, docs/multigrid.md): the stage's batch multiplier × a cosine over this run's epochs,
        annealing from 1 to `cosine_end`; the fine-tuning stage (multiplier 1) takes the cosine's tail.
        """
        rel = self.lrs[self.step_index(epoch)]
        if self.cfg.lr_policy == "cosine":
            progress = min(max(epoch / self.max_epoch, 0.0), 1.0)
            end = self.cfg.cosine_end
            rel *= end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * progress))
        return rel

    def stage_ends(self) -> list[int]:
        """End epoch (exclusive) of every stage, zero-length stages included."""
        return [s.end_epoch for s in self.stages]

    def is_eval_epoch(self, epoch: int) -> bool:
        """The reference's checkpoint/eval rule: `eval_freq` times per stage, always at each stage's end."""
        if epoch + 1 == self.max_epoch:
            return True
        stage = self.stage_at(epoch)
        period = max(stage.epochs // self.cfg.eval_freq + 1, 1)
        return (stage.end_epoch - 1 - epoch) % period == 0

    def eval_epochs(self) -> list[int]:
        """0-based epochs after which to evaluate and checkpoint."""
        return [e for e in range(self.max_epoch) if self.is_eval_epoch(e)]

    def full_shape(self, batch_size: int = 1) -> ClipShape:
        """The full T×S at the base sampling rate: what validation reads, and a dataset's default shape."""
        c = self.cfg
        return ClipShape(frames=c.frames, crop=c.crop, min_rate=c.sampling_rate, max_rate=c.sampling_rate,
                         base_crop=c.crop, stage_batch=batch_size, stage=-1, slot=0)

    def shapes(self, stage: Stage, batch_size: int) -> list[tuple[int, ClipShape]]:
        """(per-device batch, ClipShape) of each short-cycle slot, for a base per-device `batch_size`."""
        cfg = self.cfg
        max_rate = cfg.sampling_rate * max(cfg.frames // stage.frames, 1)
        return [
            (batch_size * slot.batch_factor,
             ClipShape(slot.frames, slot.crop, cfg.sampling_rate, max_rate, cfg.crop,
                       batch_size * stage.batch_factor, stage.index, k, cfg.scale_jitter == "same_view"))
            for k, slot in enumerate(stage.slots)
        ]

    # -- cost summary -------------------------------------------------------------------------------
    @property
    def epoch_stretch(self) -> float:
        """How much longer in epochs the multigrid run is than the baseline (358 / 239 for K400)."""
        return self.max_epoch / self.cfg.max_epoch

    def total_iterations(self) -> float:
        """Iterations of the whole run, in baseline epochs of iterations (69.8 for K400)."""
        return sum(s.epochs / s.mean_batch_factor for s in self.stages)

    def speedup(self) -> float:
        """Baseline iterations over this run's iterations (3.42 for K400)."""
        return self.cfg.max_epoch / self.total_iterations()

    def flop_ratio(self, clip_cost: Callable[[int, int], float] | None = None) -> float:
        """Total training FLOPs against the baseline (same clips per epoch). The cost of a clip is T·S²,
        or `clip_cost(frames, crop)` where given (e.g. counted on a ViT, whose attention is quadratic)."""
        if clip_cost is None:
            baseline = self.cfg.max_epoch * self.cfg.frames * self.cfg.crop**2
            return sum(s.epochs * s.mean_clip_cost for s in self.stages) / baseline
        total = 0.0
        for stage in self.stages:
            cost = sum(s.batch_factor * clip_cost(s.frames, s.crop) for s in stage.slots)
            total += stage.epochs * cost / sum(s.batch_factor for s in stage.slots)
        return total / (self.cfg.max_epoch * clip_cost(self.cfg.frames, self.cfg.crop))

    def to_dict(self) -> dict:
        """The reference-comparable summary printed by `mgvideo plan --json`."""
        stages = [
            {"lr_step": s.lr_step, "batch_factor": s.batch_factor, "frames": s.frames, "crop": s.crop,
             "end_epoch": s.end_epoch}
            for s in self.stages
        ] if self.cfg.long_cycle else []
        return {"stages": stages, "steps": list(self.steps), "lrs": list(self.lrs),
                "max_epoch": self.max_epoch, "iteration_saving": self.iteration_saving}
