"""The multigrid schedule against the reference tables of spec §1.5-1.6, the other modes, and bad input."""

import ast
import math
from pathlib import Path

import pytest

from mgvideo.errors import ScheduleError
from mgvideo.multigrid import MultigridConfig, MultigridSchedule

K400 = MultigridConfig()  # SlowFast 8x8 stepwise: T=32, S=224, steps 0,94,154,196, max 239
CHARADES = MultigridConfig(frames=64, steps=(0, 41, 49), max_epoch=57)
SSV2 = MultigridConfig(frames=64, steps=(0, 14, 18), max_epoch=22)


def approx_list(values):
    return pytest.approx(list(values), rel=1e-9, abs=1e-12)


def test_kinetics_table_matches_reference():
    s = MultigridSchedule(K400)
    table = [(st.lr_step, st.batch_factor, st.frames, st.crop, st.end_epoch) for st in s.stages]
    shapes = [(8, 8, 158), (4, 16, 158), (2, 16, 224), (1, 32, 224)]
    ends = [73, 110, 142, 158, 205, 228, 248, 259, 291, 308, 322, 329, 358]
    expected = [(k, *shapes[j], ends[4 * k + j]) for k in range(3) for j in range(4)]
    expected.append((3, 1, 32, 224, 358))
    assert table == expected
    assert list(s.steps) == [0, 73, 110, 142, 158, 205, 228, 248, 259, 291, 308, 322, 329, 343]
    assert list(s.lrs) == approx_list([8, 4, 2, 1, .8, .4, .2, .1, .08, .04, .02, .01, .01, .001])
    assert s.max_epoch == 358
    assert s.stages[-1].finetune and not any(st.finetune for st in s.stages[:-1])


def test_kinetics_intermediate_quantities():
    s = MultigridSchedule(K400)
    assert s.iteration_saving == pytest.approx(5.75)
    assert s.raw_epoch_sum == pytest.approx(213.45, abs=5e-3)
    assert s.epoch_scale == pytest.approx(1.6796, abs=5e-5)
    assert s.total_iterations() == pytest.approx(69.8, abs=0.05)
    assert s.speedup() == pytest.approx(3.42, abs=5e-3)


def test_kinetics_short_cycle_slots():
    """Spec §1.2: the triplets 16@112, 8@158, 8@158 ... 4@112, 2@158, 1@224 (the reference's quirk #429)."""
    s = MultigridSchedule(K400)
    slots = [[(sl.batch_factor, sl.crop) for sl in st.slots] for st in s.stages[:4]]
    assert slots == [
        [(16, 112), (8, 158), (8, 158)],
        [(8, 112), (4, 158), (4, 158)],
        [(8, 112), (4, 158), (2, 224)],
        [(4, 112), (2, 158), (1, 224)],
    ]
    assert [round(st.mean_batch_factor, 3) for st in s.stages[:4]] == [10.667, 5.333, 4.667, 2.333]


def test_relative_short_cycle_gives_full_cycle_everywhere():
    s = MultigridSchedule(MultigridConfig(short_cycle_relative=True))
    stage0 = s.stages[0]
    assert [(sl.batch_factor, sl.crop) for sl in stage0.slots] == [(32, 79), (16, 112), (8, 158)]


def test_kinetics_eval_epochs_match_reference():
    expected = [22, 47, 72, 83, 96, 109, 119, 130, 141, 145, 151, 157, 172, 188, 204, 211, 219, 227, 233,
                240, 247, 250, 254, 258, 268, 279, 290, 295, 301, 307, 311, 316, 321, 322, 325, 328, 337,
                347, 357]
    assert MultigridSchedule(K400).eval_epochs() == expected


def test_charades_table():
    s = MultigridSchedule(CHARADES)
    assert s.stage_ends() == [31, 47, 60, 67, 73, 76, 79, 80, 86]
    assert list(s.steps) == [0, 31, 47, 60, 67, 73, 76, 79, 80, 83]
    assert list(s.lrs) == approx_list([8, 4, 2, 1, .8, .4, .2, .1, .1, .01])
    assert s.max_epoch == 86
    assert s.speedup() == pytest.approx(3.46, abs=5e-3)


def test_ssv2_table_with_zero_length_stage():
    s = MultigridSchedule(SSV2)
    assert s.stage_ends() == [11, 16, 21, 24, 27, 28, 30, 30, 33]
    assert list(s.steps) == [0, 11, 16, 21, 24, 27, 28, 30, 30, 31]
    assert s.max_epoch == 33
    assert s.speedup() == pytest.approx(3.38, abs=5e-3)
    # Stage 7 (ends 30, starts 30) is never trained: epoch 29 is stage 6, epoch 30 the fine-tune stage.
    assert s.stage_index(29) == 6 and s.stage_index(30) == 8
    assert s.relative_lr(30) == pytest.approx(0.1) and s.relative_lr(31) == pytest.approx(0.01)


def test_epoch_to_stage_boundaries():
    s = MultigridSchedule(K400)
    assert [s.stage_index(e) for e in (0, 72, 72.99, 73, 157, 158, 357, 358, 1000)] == [0, 0, 0, 1, 3, 4, 12,
                                                                                         12, 12]
    assert s.stage_at(100).frames == 16 and s.stage_at(100).crop == 158


def test_step_lrs_at_epochs():
    s = MultigridSchedule(K400)
    assert s.relative_lr(0) == pytest.approx(8)
    assert s.relative_lr(72.5) == pytest.approx(8)
    assert s.relative_lr(73) == pytest.approx(4)
    assert s.relative_lr(342.9) == pytest.approx(0.01)
    assert s.relative_lr(343) == pytest.approx(0.001)


def test_short_cycle_only_scales_steps():
    s = MultigridSchedule(MultigridConfig(long_cycle=False))
    assert list(s.steps) == [0, 141, 231, 294] and s.max_epoch == 358
    assert list(s.lrs) == approx_list([1, 0.1, 0.01, 0.001])
    assert len(s.stages) == 1 and [sl.batch_factor for sl in s.stages[0].slots] == [4, 2, 1]
    assert s.iteration_saving == pytest.approx(7 / 3)
    assert s.to_dict()["stages"] == []


def test_long_cycle_only_works():
    s = MultigridSchedule(MultigridConfig(short_cycle=False))
    assert s.iteration_saving == pytest.approx(3.75)
    assert all(len(st.slots) == 1 for st in s.stages)
    ft = s.stages[-1]
    assert ft.finetune and (ft.batch_factor, ft.frames, ft.crop) == (1, 32, 224)
    assert ft.end_epoch == s.max_epoch == round(239 * 1.5)
    assert len(s.steps) == len(s.lrs) == len(s.stages) + 1
    assert s.speedup() > 1


def test_baseline_is_one_stage():
    s = MultigridSchedule(MultigridConfig(long_cycle=False, short_cycle=False))
    assert list(s.steps) == [0, 94, 154, 196] and s.max_epoch == 239
    (stage,) = s.stages
    assert (stage.batch_factor, stage.frames, stage.crop, stage.end_epoch) == (1, 32, 224, 239)
    assert s.iteration_saving == 1 and s.speedup() == 1 and s.flop_ratio() == pytest.approx(1)


def test_flop_ratio_below_one_and_consistent():
    s = MultigridSchedule(K400)
    manual = sum(st.epochs * st.mean_clip_cost for st in s.stages) / (239 * 32 * 224**2)
    assert s.flop_ratio() == pytest.approx(manual) and 0 < s.flop_ratio() < 1


def test_cosine_variant_is_sane():
    cfg = MultigridConfig(lr_policy="cosine", steps=(), max_epoch=196)
    s = MultigridSchedule(cfg)
    assert s.stages[-1].finetune and s.stages[-1].batch_factor == 1 and s.stages[-1].frames == 32
    assert s.max_epoch == round(196 * 1.5)
    epochs = [e / 4 for e in range(4 * s.max_epoch)]
    envelope = [s.relative_lr(e) / s.stage_at(e).batch_factor for e in epochs]
    assert all(b <= a + 1e-12 for a, b in zip(envelope, envelope[1:]))  # monotone within the envelope
    assert envelope[0] == pytest.approx(1) and envelope[-1] < 0.01
    assert s.relative_lr(0) == pytest.approx(8)  # batch-linear scaling of the first stage
    for st in s.stages:
        if st.epochs:
            mid = (st.start_epoch + st.end_epoch) / 2
            assert s.relative_lr(mid) / st.batch_factor == pytest.approx(
                0.5 * (1 + math.cos(math.pi * mid / s.max_epoch)))


def test_cosine_with_explicit_steps_and_end_lr():
    s = MultigridSchedule(MultigridConfig(lr_policy="cosine", cosine_end=0.01))
    assert s.stage_ends() == MultigridSchedule(K400).stage_ends()
    assert s.relative_lr(s.max_epoch) == pytest.approx(0.01)


def test_cosine_baseline():
    s = MultigridSchedule(MultigridConfig(lr_policy="cosine", steps=(), long_cycle=False, short_cycle=False,
                                          max_epoch=196))
    assert s.relative_lr(0) == 1 and s.relative_lr(98) == pytest.approx(0.5) and s.max_epoch == 196


def test_shapes_carry_sampling_rate_range():
    s = MultigridSchedule(K400)
    first = s.shapes(s.stages[0], 8)
    assert [b for b, _ in first] == [128, 64, 64]
    shape = first[0][1]
    assert (shape.frames, shape.crop, shape.min_rate, shape.max_rate) == (8, 112, 2, 8)
    assert (shape.base_crop, shape.stage_batch, shape.stage, shape.slot) == (224, 64, 0, 0)
    assert [sh.max_rate for _, sh in s.shapes(s.stages[1], 8)] == [4, 4, 4]
    assert s.shapes(s.stages[3], 8)[2][1].max_rate == 2


def test_same_view_scale_jitter_reaches_every_clip_shape():
    same = MultigridSchedule(MultigridConfig(scale_jitter="same_view"))
    ref = MultigridSchedule(MultigridConfig())
    assert all(shape.same_view for stage in same.stages for _, shape in same.shapes(stage, 8))
    assert not any(shape.same_view for stage in ref.stages for _, shape in ref.shapes(stage, 8))


BAD = [
    ({"steps": (0, 94, 94)}, "steps"),
    ({"steps": (5, 94)}, "steps"),
    ({"steps": ()}, "steps"),
    ({"steps": (0, 1.5)}, "steps"),
    ({"max_epoch": 196}, "max_epoch"),
    ({"frames": 0}, "frames"),
    ({"crop": -3}, "crop"),
    ({"gamma": 0}, "gamma"),
    ({"epoch_factor": -1.0}, "epoch_factor"),
    ({"lr_policy": "linear"}, "lr_policy"),
    ({"long_cycle_factors": ((0.25, 0.0),)}, "long_cycle_factors"),
    ({"long_cycle_factors": ()}, "long_cycle_factors"),
    ({"long_cycle_factors": ((0.25, 0.001),)}, "long_cycle_factors"),  # crop rounds to 0
    ({"long_cycle_factors": ((4.0, 2.0),)}, "long_cycle_factors"),  # batch factor rounds to 0
    ({"short_cycle_factors": (0.5, -1.0)}, "short_cycle_factors"),
    ({"short_cycle_factors": (0.001, 0.5)}, "short_cycle_factors"),  # crop rounds to 0
    ({"short_cycle_factors": (3.0,)}, "short_cycle_factors"),  # multiplier rounds to 0
    ({"sampling_rate": 0}, "sampling_rate"),
    ({"eval_freq": 0}, "eval_freq"),
    ({"scale_jitter": "zoom"}, "scale_jitter"),
    ({"cosine_end": 1.0}, "cosine_end"),
    ({"lr_policy": "cosine", "steps": (), "max_epoch": 2, "cosine_cycles": 5}, "cosine_cycles"),
]


@pytest.mark.parametrize(("overrides", "field"), BAD)
def test_invalid_input_names_the_field(overrides, field):
    with pytest.raises(ScheduleError, match=rf"^{field}:"):
        MultigridSchedule(MultigridConfig(**overrides))


@pytest.mark.parametrize("name", ["schedule.py", "cost.py"])  # cost.py: the measured batch rule it uses
def test_schedule_module_imports_no_torch(name):
    source = Path(__file__).parents[1] / "mgvideo" / "multigrid" / name
    tree = ast.parse(source.read_text())
    modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(m and m.split(".")[0] == "torch" for m in modules)
    allowed = ("mgvideo.errors", "mgvideo.multigrid.cost", "__future__", "math", "dataclasses",
               "collections.abc")
    assert all(m.startswith(allowed) for m in modules if m)


def test_full_shape_is_what_validation_reads():
    # The README's own-loop example gives it to VideoClipDataset; the trainer validates at the same shape.
    from mgvideo.config import load_config
    from mgvideo.engine.builders import build_schedule
    from mgvideo.multigrid.schedule import ClipShape

    for recipe in ("configs/kinetics/slowfast_r50_8x8_multigrid.yaml", "configs/synthetic/tiny.yaml"):
        cfg = load_config(recipe)
        d = cfg.data  # the data's full shape at its sampling rate, whatever the schedule
        full = ClipShape(d.frames, d.crop, d.sampling_rate, d.sampling_rate, d.crop, 8, -1, 0)
        assert build_schedule(cfg).full_shape(8) == full
