"""Batch samplers: properties over sizes, ranks, epochs and resume positions (hypothesis), plus examples."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mgvideo.errors import ConfigError
from mgvideo.multigrid import (
    ClipShape,
    FixedShapeBatchSampler,
    MultigridBatchSampler,
    MultigridConfig,
    MultigridSchedule,
    count_batches,
    iterations_per_epoch,
)

SCHEDULES = {
    "k400": MultigridSchedule(MultigridConfig()),
    "long_only": MultigridSchedule(MultigridConfig(short_cycle=False)),
    "short_only": MultigridSchedule(MultigridConfig(long_cycle=False)),
    "relative": MultigridSchedule(MultigridConfig(short_cycle_relative=True)),
    "baseline": MultigridSchedule(MultigridConfig(long_cycle=False, short_cycle=False)),
}
FEW = settings(max_examples=50, deadline=None)

cases = st.fixed_dictionaries({
    "schedule": st.sampled_from(sorted(SCHEDULES)),
    "size": st.integers(1, 600),
    "batch": st.integers(1, 4),
    "world": st.integers(1, 4),
    "epoch": st.integers(0, 400),
    "seed": st.integers(0, 2**31),
    "drop_last": st.booleans(),
})


def samplers(case):
    schedule = SCHEDULES[case["schedule"]]
    world = min(case["world"], case["size"])
    return [MultigridBatchSampler(schedule, case["size"], case["batch"], rank=r, world_size=world,
                                  seed=case["seed"], drop_last=case["drop_last"]) for r in range(world)]


def run_epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


@FEW
@given(cases)
def test_ranks_agree_on_shapes_and_lengths_and_share_disjoint_indices(case):
    ranks = samplers(case)
    epochs = [run_epoch(s, case["epoch"]) for s in ranks]
    lengths = {len(batches) for batches in epochs} | {len(s) for s in ranks}
    assert len(lengths) == 1  # exact __len__, identical on every rank
    shapes = [[(len(b), b[0][1]) for b in batches] for batches in epochs]
    assert all(sh == shapes[0] for sh in shapes)
    seen = [i for batches in epochs for b in batches for i, _ in b]
    assert len(seen) == len(set(seen))  # no index twice in an epoch, on any rank
    assert all(0 <= i < case["size"] for i in seen)
    if not case["drop_last"]:
        assert len(seen) == case["size"] // len(ranks) * len(ranks)


@FEW
@given(cases)
def test_batches_follow_the_stage_and_short_cycle(case):
    sampler = samplers(case)[0]
    batches = run_epoch(sampler, case["epoch"])
    schedule = sampler.schedule
    stage = schedule.stage_at(case["epoch"])
    cycle = schedule.shapes(stage, case["batch"])
    for i, batch in enumerate(batches):
        size, shape = cycle[i % len(cycle)]
        assert all(s is shape or s == shape for _, s in batch)
        last = i == len(batches) - 1
        assert len(batch) == size or (last and not case["drop_last"] and len(batch) < size)
        assert shape.stage_batch == case["batch"] * stage.batch_factor
        assert (shape.frames, shape.slot) == (stage.slots[i % len(cycle)].frames, i % len(cycle))


@FEW
@given(cases, st.data())
def test_resume_yields_exactly_the_remaining_batches(case, data):
    sampler = samplers(case)[-1]
    full = run_epoch(sampler, case["epoch"])
    position = data.draw(st.integers(0, len(full)))
    it = iter(sampler)
    for _ in range(position):
        next(it)
    state = sampler.state_dict()
    assert state["position"] == position
    resumed = samplers(case)[-1]
    resumed.load_state_dict(state)
    resumed.set_epoch(case["epoch"])  # the trainer's per-epoch call must not lose the position
    assert list(resumed) == full[position:]
    assert list(resumed) == full  # the pass after the resumed one is a whole epoch again


@FEW
@given(st.integers(0, 500), st.lists(st.integers(1, 9), min_size=1, max_size=4), st.booleans())
def test_count_batches_matches_a_simulation(n, sizes, drop_last):
    count = offset = 0
    while offset < n:
        size = sizes[count % len(sizes)]
        if n - offset < size and drop_last:
            break
        offset, count = offset + size, count + 1
    assert count_batches(n, sizes, drop_last) == count


def test_epochs_reshuffle_and_seed_repeats():
    schedule = SCHEDULES["baseline"]
    a = MultigridBatchSampler(schedule, 100, 4, seed=1)
    b = MultigridBatchSampler(schedule, 100, 4, seed=1)
    assert run_epoch(a, 3) == run_epoch(b, 3)
    assert run_epoch(a, 3) != run_epoch(a, 4)
    unshuffled = run_epoch(MultigridBatchSampler(schedule, 100, 4, shuffle=False), 0)
    assert [i for i, _ in unshuffled[0]] == [0, 1, 2, 3]


def test_kinetics_stage_zero_batches():
    sampler = MultigridBatchSampler(SCHEDULES["k400"], 1000, 8, world_size=8)
    batches = run_epoch(sampler, 0)
    assert batches == [] and len(sampler) == 0  # 125 clips per rank: not one full slot-0 batch of 128
    sampler = MultigridBatchSampler(SCHEDULES["k400"], 1000, 8, world_size=8, drop_last=False)
    assert [len(b) for b in run_epoch(sampler, 0)] == [125] and len(sampler) == 1
    sampler = MultigridBatchSampler(SCHEDULES["k400"], 10_000, 8, world_size=8)
    sizes = [(len(b), b[0][1].crop, b[0][1].frames) for b in run_epoch(sampler, 0)[:3]]
    assert sizes == [(128, 112, 8), (64, 158, 8), (64, 158, 8)]


def test_iterations_per_epoch_kinetics():
    """K400 at 240436 clips, 8 per device on 8 devices: the baseline's 3756 iterations (issue #277)."""
    assert iterations_per_epoch(240436, 8, 8) == 3756
    k400 = SCHEDULES["k400"]
    factors = [[slot.batch_factor for slot in stage.slots] for stage in k400.stages[:4]]
    counts = [iterations_per_epoch(240436, 8, 8, f) for f in factors]
    assert counts == [351, 704, 804, 1609]  # exact; the reference's average-based length says 352 ... 1610
    sampler = MultigridBatchSampler(k400, 240436, 8, world_size=8)
    sampler.set_epoch(100)
    assert len(sampler) == counts[1]


def test_fixed_shape_covers_every_clip_once():
    shape = ClipShape(32, 224, 2, 2, 224, 8, 0, 0)
    ranks = [FixedShapeBatchSampler(shape, 103, 8, rank=r, world_size=4) for r in range(4)]
    seen = [i for s in ranks for b in s for i, sh in b if sh == shape]
    assert sorted(seen) == list(range(103))
    assert [len(s) for s in ranks] == [len(list(s)) for s in ranks] == [4, 4, 4, 4]
    dropped = [FixedShapeBatchSampler(shape, 103, 5, rank=r, world_size=4, drop_last=True) for r in range(4)]
    assert {len(list(s)) for s in dropped} == {len(s) for s in dropped} == {5}


def test_fixed_shape_shuffle_and_resume():
    shape = ClipShape(8, 112, 2, 8, 224, 8, 0, 0)
    sampler = FixedShapeBatchSampler(shape, 50, 4, shuffle=True, seed=3)
    full = list(sampler)
    assert sorted(i for b in full for i, _ in b) == list(range(50)) and full != list(
        FixedShapeBatchSampler(shape, 50, 4))
    resumed = FixedShapeBatchSampler(shape, 50, 4, shuffle=True, seed=3)
    resumed.load_state_dict(sampler.state_dict(consumed=5))
    assert list(resumed) == full[5:]


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"dataset_size": 0}, {"world_size": 0},
                                    {"rank": 2, "world_size": 2}, {"dataset_size": 1, "world_size": 2}])
def test_bad_arguments(kwargs):
    args = {"dataset_size": 10, "batch_size": 2} | kwargs
    with pytest.raises(ConfigError):
        MultigridBatchSampler(SCHEDULES["k400"], args.pop("dataset_size"), args.pop("batch_size"), **args)


def test_resume_refuses_a_different_run():
    sampler = MultigridBatchSampler(SCHEDULES["k400"], 100, 2, seed=0)
    state = sampler.state_dict()
    with pytest.raises(ConfigError, match="seed"):
        MultigridBatchSampler(SCHEDULES["k400"], 100, 2, seed=1).load_state_dict(state)
    with pytest.raises(ConfigError, match="position"):
        sampler.load_state_dict(state | {"position": 10_000})


def test_stage_batch_follows_the_long_cycle_stage():
    schedule = MultigridSchedule(MultigridConfig())
    sampler = MultigridBatchSampler(schedule, dataset_size=1000, batch_size=8)
    seen = {}
    for epoch in (0, 80, 120, 150, 340):
        sampler.set_epoch(epoch)
        seen[epoch] = sampler.stage_batch
        assert all(shape.stage_batch == sampler.stage_batch for batch in sampler for _, shape in batch[:1])
    assert seen == {0: 64, 80: 32, 120: 16, 150: 8, 340: 8}


def test_resume_inside_a_multiworker_dataloader_yields_the_remaining_batches():
    """A multi-worker DataLoader calls iter() on its batch sampler twice per pass; resume must survive it."""
    import torch.utils.data as tud

    class Indices(tud.Dataset):
        def __len__(self):
            return 60

        def __getitem__(self, item):
            return item[0]

    def sampler():
        return MultigridBatchSampler(MultigridSchedule(MultigridConfig()), dataset_size=60, batch_size=1)

    full = sampler()
    full.set_epoch(0)
    expected = [[i for i, _ in batch] for batch in full]
    saved = sampler()
    saved.set_epoch(0)
    state = saved.state_dict(consumed=2)
    resumed = sampler()
    resumed.load_state_dict(state)
    resumed.set_epoch(0)
    loader = tud.DataLoader(Indices(), batch_sampler=resumed, num_workers=2)
    assert [batch.tolist() for batch in loader] == expected[2:]


@FEW
@given(cases, st.integers(1, 4), st.data())
def test_resume_with_another_world_size_deals_the_rest_of_the_same_epoch(case, new_world, data):
    # A restart with fewer or more processes (torchrun --nnodes 1:2) goes on from the global position:
    # the clips not yet consumed are shared out anew, the short cycle goes on from its slot, every rank
    # of the new world runs the same number of batches, and the epoch ends at the new world's length.
    case = case | {"drop_last": True, "batch": case["batch"] * 2}  # any per-device batch
    old = samplers(case)
    old_world = len(old)
    full = run_epoch(old[0], case["epoch"])
    position = data.draw(st.integers(0, len(full)))
    consumed = set()
    for sampler in old:
        sampler.set_epoch(case["epoch"])
        it = iter(sampler)
        for _ in range(position):
            consumed.update(i for i, _ in next(it))
    state = old[0].state_dict()
    assert state["clips"] == len(consumed)
    new_world = min(new_world, case["size"])
    new = [MultigridBatchSampler(old[0].schedule, case["size"], case["batch"], rank=r, world_size=new_world,
                                 seed=case["seed"]) for r in range(new_world)]
    for sampler in new:
        sampler.load_state_dict(state)
        sampler.set_epoch(case["epoch"])
    rests = [list(sampler) for sampler in new]
    assert len({len(r) for r in rests}) == 1
    assert {len(s) - s.state_dict(consumed=s._resume.position)["position"] for s in new} == {len(rests[0])}
    dealt = [i for rest in rests for b in rest for i, _ in b]
    assert len(dealt) == len(set(dealt)) and not set(dealt) & consumed  # nothing twice in the epoch
    cycle = old[0].schedule.shapes(old[0].stage, case["batch"])
    left_out = case["size"] - len(consumed) - len(dealt)  # the remainder and a partial batch per rank
    assert left_out < new_world * (max(size for size, _ in cycle) + 1)
    slot = state["phase"]
    for k, batch in enumerate(rests[0]):  # the short cycle's next slot first
        assert batch[0][1] == cycle[(slot + k) % len(cycle)][1]
    if new_world == old_world:
        assert new[0].resharded is None and rests[0] == full[position:]
    else:
        assert new[0].resharded == old_world
        assert len(new[0]) == max(new[0]._full_length(), len(rests[0]))  # longer only if what is left is
