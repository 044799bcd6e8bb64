"""`mgvideo plan`: JSON output matches the schedule, the plot is a PNG, bad flags exit 2 naming the flag."""

import json

import pytest

from mgvideo.cli import main
from mgvideo.multigrid import MultigridConfig, MultigridSchedule


def run_cli(capsys, *argv):
    try:
        code = main(["plan", *argv])
    except SystemExit as exc:  # argparse rejects a malformed value itself
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def test_json_is_one_object_matching_the_schedule(capsys):
    code, out, _ = run_cli(capsys, "--json")
    assert code == 0
    data = json.loads(out)
    expected = MultigridSchedule(MultigridConfig())
    assert data["steps"] == list(expected.steps) and data["max_epoch"] == 358
    assert data["lrs"] == pytest.approx(list(expected.lrs))
    assert data["reference_epoch_compression"] == pytest.approx(5.75)
    assert [s["end_epoch"] for s in data["stages"]] == expected.stage_ends()
    first = {"lr_step": 0, "batch_factor": 8, "frames": 8, "crop": 158, "end_epoch": 73}
    assert {k: data["stages"][0][k] for k in first} == first


def test_json_for_charades_flags(capsys):
    code, out, _ = run_cli(capsys, "--json", "--frames", "64", "--steps", "0,41,49", "--max-epoch", "57",
                           "--long-cycle-factors", "0.25,0.7071;0.5,0.7071;0.5,1;1,1",
                           "--short-cycle-factors", "0.5,0.7071")
    assert code == 0
    assert json.loads(out)["steps"] == [0, 31, 47, 60, 67, 73, 76, 79, 80, 83]


def test_json_one_stage_without_long_cycle(capsys):
    code, out, _ = run_cli(capsys, "--json", "--no-long-cycle")
    data = json.loads(out)
    assert code == 0 and len(data["stages"]) == 1 and data["steps"] == [0, 141, 231, 294]
    code, out, _ = run_cli(capsys, "--json", "--no-long-cycle", "--no-short-cycle")
    assert json.loads(out)["max_epoch"] == 239 and json.loads(out)["iteration_saving"] == 1


def test_table_lists_stages_bn_and_iterations(capsys):
    code, out, _ = run_cli(capsys, "--frames", "64", "--steps", "0,41,49", "--max-epoch", "57",
                           "--batch-size", "2")
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:10]]
    assert [r[0] for r in rows] == [str(i) for i in range(9)]
    assert "sub×2" in rows[0] and "BN" in rows[1] and "sync×2" in rows[2] and "sync×4" in rows[3]
    assert "FLOPs vs baseline" in out and "iteration saving" in out


def test_plot_writes_a_png(capsys, tmp_path):
    path = tmp_path / "plan.png"
    code, out, _ = run_cli(capsys, "--plot", str(path), "--lr-policy", "cosine", "--max-epoch", "196")
    assert code == 0 and str(path) in out
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


@pytest.mark.parametrize(("argv", "flag"), [
    (["--steps", "0,94,94"], "--steps"),
    (["--steps", "0,x"], "--steps"),
    (["--max-epoch", "100"], "--max-epoch"),
    (["--crop", "0"], "--crop"),
    (["--gamma", "0"], "--gamma"),
    (["--epoch-factor", "-2"], "--epoch-factor"),
    (["--long-cycle-factors", "0.25;1"], "--long-cycle-factors"),
    (["--long-cycle-factors", "0.25,0"], "--long-cycle-factors"),
    (["--short-cycle-factors", "0.001,0.5"], "--short-cycle-factors"),
    (["--lr-policy", "linear"], "--lr-policy"),
    (["--base-lr", "-0.1"], "--base-lr"),
    (["--devices", "0"], "--devices"),
    (["--dataset-size", "4", "--devices", "8"], "--dataset-size"),
    (["--plot", "plan.jpg"], "--plot"),
])
def test_bad_flags_exit_2_naming_the_flag(capsys, argv, flag):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and flag in err


def test_config_recipe_gives_the_same_schedule_as_the_trainer(capsys):
    code, out, _ = run_cli(capsys, "--json", "--config", "configs/charades/slowfast_r50_16x8_multigrid.yaml")
    assert code == 0
    assert json.loads(out)["steps"] == [0, 31, 47, 60, 67, 73, 76, 79, 80, 83]
    code, out, _ = run_cli(capsys, "--json", "--config", "configs/charades/slowfast_r50_16x8_multigrid.yaml",
                           "multigrid.long_cycle=false")
    assert code == 0 and len(json.loads(out)["stages"]) == 1


def test_config_errors_name_the_key_and_overrides_need_a_config(capsys):
    code, _, err = run_cli(capsys, "--config", "configs/synthetic/tiny.yaml", "solver.max_epok=3")
    assert code == 2 and "solver.max_epok" in err
    code, _, err = run_cli(capsys, "solver.max_epoch=3")
    assert code == 2 and "--config" in err


def test_a_bench_config_plans_its_multigrid_run(capsys):
    from mgvideo.bench.tta import load_bench, variant_config
    from mgvideo.engine.builders import build_schedule

    spec, cfg = load_bench("configs/synthetic/bench.yaml", ["solver.max_epoch=25"])
    expected = build_schedule(variant_config(cfg, spec, "multigrid", 0))
    code, out, _ = run_cli(capsys, "--json", "--config", "configs/synthetic/bench.yaml",
                           "solver.max_epoch=25")
    assert code == 0 and expected.stages  # the long cycle is on, whatever the file's own multigrid section
    assert json.loads(out)["steps"] == list(expected.steps)


def floats(tree):
    if isinstance(tree, float):
        yield tree
    elif isinstance(tree, dict):
        for v in tree.values():
            yield from floats(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from floats(v)


def test_config_plans_its_own_devices_and_data(capsys):
    code, out, err = run_cli(capsys, "--json", "--config", "configs/synthetic/tiny.yaml")
    assert code == 0, err
    data = json.loads(out)
    assert data["devices"] == {"devices": 1, "per_device_batch": 2, "micro_batches": 1, "global_batch": 2,
                               "base_lr": 0.05}
    assert data["dataset_size"] == 40  # the synthetic small set's training list, not Kinetics'
    assert data["iterations"] == 28 and data["baseline_iterations"] == 100  # what `train` runs (test_trainer)
    assert data["iteration_saving"] == round(100 / 28, 6 - 1)
    assert 0 < data["flop_ratio"] < 1 and data["time_speedup"] > 1
    assert all(len(repr(x)) <= 9 for x in floats(data)), list(floats(data))  # no 0.08000000000000002
    rows = data["stages"]
    assert rows[0]["slots"][0] == [32, 2, 16] and rows[0]["bn_groups"] == "sub×8"
    assert [r["iterations_per_epoch"] for r in rows] == [1, 3, 3, 8, 8]


def test_schedule_flags_beside_a_config_are_an_error(capsys):
    for flag in (["--frames", "8"], ["--max-epoch", "20"], ["--no-short-cycle"], ["--batch-size", "4"]):
        code, _, err = run_cli(capsys, "--config", "configs/synthetic/tiny.yaml", *flag)
        assert code == 2 and flag[0] in err and "--config" in err, (flag, err)


def test_table_states_the_expected_speed_up_in_time(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "--config", "configs/synthetic/tiny.yaml")
    assert code == 0 and "expected speed-up in training time" in out and "assuming" in out
    assert "epoch_factor 1.5x the epochs" in out
    plan = json.loads(run_cli(capsys, "--json", "--config", "configs/synthetic/tiny.yaml")[1])
    shapes = {(s[1], s[2]) for r in plan["stages"] for s in r["slots"]}
    # A measured profile where a clip costs the same at every shape: no speed-up beyond the clip count.
    rows = [{"batch": 1, "frames": t, "crop": s, "sec_per_iter": 0.01} for t, s in shapes]
    (tmp_path / "flat.json").write_text(json.dumps(rows))
    code, out, err = run_cli(capsys, "--json", "--config", "configs/synthetic/tiny.yaml",
                             "--profile", str(tmp_path / "flat.json"))
    assert code == 0, err
    measured = json.loads(out)
    clips = sum(r["iterations_per_epoch"] * (r["end_epoch"] - r["start_epoch"])
                * sum(s[0] for s in r["slots"]) / len(r["slots"]) for r in plan["stages"])
    assert measured["time_speedup"] == pytest.approx(100 * 2 / clips, rel=1e-5)
    assert str(tmp_path / "flat.json") in measured["time_speedup_basis"]
    (tmp_path / "part.json").write_text(json.dumps(rows[1:]))
    code, _, err = run_cli(capsys, "--config", "configs/synthetic/tiny.yaml", "--profile",
                           str(tmp_path / "part.json"))
    assert code == 2 and "--profile" in err and "no row for" in err


def test_help_cites_no_spec_sections(capsys):
    with pytest.raises(SystemExit):
        main(["plan", "--help"])
    assert "spec" not in capsys.readouterr().out


def test_flags_are_shorthands_for_the_default_recipes_keys(capsys):
    # With --model naming the recipe's model the flags plan exactly the recipe (its shape multiple too).
    flags = ["--frames", "16", "--no-short-cycle", "--base-lr", "0.2", "--batch-size", "4", "--devices", "2",
             "--model", "slowfast_r50_8x8"]
    code, out, err = run_cli(capsys, "--json", "--dataset-size", "240436", *flags)
    assert code == 0, err
    keys = ["data.frames=16", "multigrid.short_cycle=false", "solver.base_lr=0.2", "solver.batch_size=8",
            "solver.recipe_devices=2"]
    code, same, err = run_cli(capsys, "--json", "--dataset-size", "240436", "--devices", "2",
                              "--config", "kinetics/slowfast_r50_8x8_multigrid", *keys)
    assert code == 0, err
    assert json.loads(out) == json.loads(same)
    code, _, err = run_cli(capsys, "--gamma", "-1")  # a key's error names the flag that set it
    assert code == 2 and "--gamma" in err and "solver.gamma" not in err


def test_a_pass_limit_is_planned_or_refused_by_name(capsys):
    # tiny: 2 clips per device, BN groups of 2; its largest batch is stage 0's first slot, 32 clips.
    code, out, err = run_cli(capsys, "--json", "--config", "configs/synthetic/tiny.yaml",
                             "solver.max_clips_per_pass=32")
    assert code == 0, err
    assert json.loads(out)["devices"]["micro_batches"] == 1
    code, _, err = run_cli(capsys, "--config", "configs/synthetic/tiny.yaml", "solver.max_clips_per_pass=16")
    assert code == 2 and "solver.max_clips_per_pass=16: 2 passes per step would normalise" in err


def test_the_dev_shm_a_node_needs_is_stated_per_rank_count(capsys):
    # 8 ranks with two persistent worker pools each need far more than the 8 GB once hinted.
    from mgvideo.config import load_config
    from mgvideo.data.loader import PREFETCH_FACTOR, shm_need_bytes
    from mgvideo.engine.builders import build_schedule

    recipe = "configs/kinetics/slowfast_r50_8x8_multigrid.yaml"
    assert main(["plan", "--config", recipe, "--dataset-size", "240436", "data.workers=8"]) == 0
    out = capsys.readouterr().out
    lines = [line.strip() for line in out.splitlines() if "of /dev/shm" in line]
    assert [line.split(" rank")[0] for line in lines] == ["1", "2", "4", "8"]
    schedule = build_schedule(load_config(recipe))
    largest = max(b * 3 * shape.frames * shape.crop**2 for stage in schedule.stages
                  for b, shape in schedule.shapes(stage, 8))  # 8 clips a device at the base shape
    eight = shm_need_bytes(8, 8, PREFETCH_FACTOR, largest, videos=240436)
    assert lines[-1].startswith("8 ranks a node, 8 loader workers each")
    assert f"{eight / 2**30:.1f} GiB" in lines[-1] and eight > 8 * 2**30


def test_model_flag_rounds_shapes_to_its_multiple_and_says_so(capsys):
    # PySlowFast trains T = round(8 x 0.25) = 2; a SlowFast (alpha 4) needs 4: only --model asks for that.
    flags = ["--frames", "8", "--steps", "0,44,88,118", "--max-epoch", "196"]
    plain = json.loads(run_cli(capsys, "--json", *flags)[1])
    code, out, err = run_cli(capsys, "--json", *flags, "--model", "slowfast_r50_8x8")
    assert code == 0, err
    model = json.loads(out)
    assert plain["stages"][0]["frames"] == 2 and model["stages"][0]["frames"] == 4
    assert model["shape_multiple"]["frames"] == 4 and "slowfast_r50_8x8" in model["shape_multiple"]["source"]
    code, out, _ = run_cli(capsys, *flags, "--model", "slowfast_r50_8x8")
    assert code == 0 and "multiples of 4" in out and "slowfast_r50_8x8" in out
    code, out, _ = run_cli(capsys, "--json", "--config", "kinetics/slowfast_r50_8x8_multigrid")
    assert json.loads(out)["shape_multiple"]["frames"] == 4
    code, _, err = run_cli(capsys, "--model", "slowfast_r50_8x9")
    assert code == 2 and "--model" in err and "slowfast_r50_8x8" in err and "model.name" not in err


def test_flags_for_another_run_length_bring_no_kinetics_warmup(capsys):
    # The Kinetics recipe's 34 warmup epochs belong to its 239-epoch run, not to an SSv2-length one.
    assert json.loads(run_cli(capsys, "--json")[1])["warmup_epochs"] == 34
    ssv2 = ["--steps", "0,14,18", "--max-epoch", "22"]
    code, out, err = run_cli(capsys, *ssv2)
    assert code == 0, err
    assert "warmup: none" in out
    code, out, _ = run_cli(capsys, "--json", *ssv2, "--warmup-epochs", "2")
    assert code == 0 and json.loads(out)["warmup_epochs"] == 2
    code, _, err = run_cli(capsys, *ssv2, "--warmup-epochs", "40")
    assert code == 2 and "--warmup-epochs" in err and "33-epoch run" in err


def expected_passes(recipe, overrides, devices):
    """What `train` does with each step: its passes (device_plan) and, per stage and slot, the clips, shape
    and BN plan of one forward (`train_step` splits the step's batch; the step rule's `bn_plan` groups it)."""
    from mgvideo.config import load_config, override
    from mgvideo.engine.builders import build_schedule
    from mgvideo.engine.device import device_plan
    from mgvideo.engine.step import bn_plan

    cfg = override(load_config(recipe), **overrides)
    schedule = build_schedule(cfg)
    plan = device_plan(cfg, devices, schedule)
    k = plan.micro_batches
    stages = [[(b // k, shape.frames, shape.crop,
                bn_plan(b, shape.stage_batch, cfg.model.bn_base_size, devices, k))
               for b, shape in schedule.shapes(stage, plan.batch)] for stage in schedule.stages]
    return k, stages


def bn_text(plan):
    if plan.sync_size > 1:
        return f"sync×{plan.sync_size}"
    return f"sub×{plan.groups}" if plan.groups > 1 else "BN"


@pytest.mark.parametrize(("recipe", "overrides", "devices", "passes"), [
    ("configs/kinetics/slowfast_r50_8x8_multigrid.yaml", {"solver.max_clips_per_pass": 128}, 1, 8),
    ("configs/kinetics/slowfast_r50_8x8_multigrid.yaml", {}, 1, 1),  # one pass of the 8 devices' clips
    ("configs/synthetic/tiny.yaml", {"solver.accumulate": 2}, 1, 2),
])
def test_rows_show_each_forward_pass_as_train_takes_it(capsys, recipe, overrides, devices, passes):
    k, stages = expected_passes(recipe, overrides, devices)
    assert k == passes
    keys = [f"{key}={value}" for key, value in overrides.items()]
    code, out, err = run_cli(capsys, "--json", "--config", recipe, "--devices", str(devices),
                             "--dataset-size", "240436", *keys)
    assert code == 0, err
    rows = json.loads(out)["stages"]
    assert [r["passes_per_step"] for r in rows] == [k] * len(stages)
    assert [r["slots_per_pass"] for r in rows] == [[[b, t, s] for b, t, s, _ in st] for st in stages]
    assert [r["bn_groups"] for r in rows] == [bn_text(st[-1][3]) for st in stages]
    assert all(len({bn for *_, bn in st}) == 1 for st in stages)  # one BN layout per stage, as printed
    code, out, _ = run_cli(capsys, "--config", recipe, "--devices", str(devices), "--dataset-size", "240436",
                           *keys)
    first, slots = out.splitlines()[1].split(), len(stages[0])  # stage, LR step, epochs, slots, passes, BN
    b, t, s, bn = stages[0][0]
    assert "per-pass" in out.splitlines()[0]
    assert first[3] == f"({b},{t},{s})" and first[3 + slots:5 + slots] == [str(k), bn_text(bn)]
