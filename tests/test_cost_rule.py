"""The measured batch rule (multigrid/cost.py): each shape's batch makes a step cost what a full step costs,
the LR follows that batch, and without a table every schedule is the FLOP rule's."""

import json
from pathlib import Path

import pytest

from mgvideo.bench.bench_config import load_any_config
from mgvideo.config import load_config, override
from mgvideo.engine.builders import build_schedule
from mgvideo.engine.cost_table import read_cost_table
from mgvideo.errors import ConfigError, ScheduleError
from mgvideo.multigrid import LRConfig, MultigridConfig, MultigridSchedule, lr_at
from mgvideo.multigrid.cost import MAX_OVER_FLOPS, CostTable, step_ms

# A small recipe: full shape 16 x 32, shapes rounded to a ViT's tubelet (2) and patch (8).
SMALL = dict(frames=16, crop=32, steps=(0, 8, 12), max_epoch=15, shape_multiple=(2, 8))


def shapes_of(schedule):
    return {(s.frames, s.crop) for st in schedule.stages for s in st.slots}


def attention_table(shapes, full=(16, 32), patch=(2, 8)):
    """ms per clip of a toy transformer: linear in tokens plus an attention term in tokens²."""
    def tokens(t, s):
        return (t // patch[0]) * (s // patch[1]) ** 2
    return {shape: 0.01 * tokens(*shape) + 0.0002 * tokens(*shape) ** 2 for shape in shapes}


def step_costs(schedule, table):
    """Predicted ms of a step at each slot, for base batch 1."""
    return [step_ms(table, s.batch_factor, s.frames, s.crop) for st in schedule.stages for s in st.slots]


def test_measured_rule_equalises_step_cost_where_the_flop_rule_does_not():
    flops = MultigridSchedule(MultigridConfig(**SMALL))
    ms = attention_table(shapes_of(flops))
    table = CostTable.from_dicts(ms)
    measured = MultigridSchedule(MultigridConfig(**SMALL, cost_table=table))
    full = table.ms(16, 32)
    flop_costs, measured_costs = step_costs(flops, table), step_costs(measured, table)
    # The FLOP rule under-fills coarse shapes: their steps cost far less than a full step.
    assert min(flop_costs) < 0.5 * full
    # The measured rule: every step within the rounding of its batch to whole base batches.
    for st in measured.stages:
        for s in st.slots:
            assert abs(s.batch_factor * table.ms(s.frames, s.crop) - full) <= 0.5 * table.ms(s.frames, s.crop)
    spread = (max(measured_costs) - min(measured_costs)) / full
    assert spread < (max(flop_costs) - min(flop_costs)) / full
    assert max(s.batch_factor for st in measured.stages for s in st.slots) > max(
        s.batch_factor for st in flops.stages for s in st.slots)


def test_exact_ratios_give_exactly_equal_steps_and_each_stage_equal_iterations():
    flops = MultigridSchedule(MultigridConfig(**SMALL))
    # Each shape's clip costs the full clip / k for an integer k that differs from its FLOP factor.
    ks = {shape: 1 + (i % 5) for i, shape in enumerate(sorted(shapes_of(flops) - {(16, 32)}))}
    ks[(16, 32)] = 1
    table = CostTable.from_dicts({shape: 12.0 / k for shape, k in ks.items()})
    measured = MultigridSchedule(MultigridConfig(**SMALL, cost_table=table))
    assert set(step_costs(measured, table)) == {12.0}
    assert [s.batch_factor for st in measured.stages for s in st.slots] == [
        ks[(s.frames, s.crop)] for st in measured.stages for s in st.slots]


def test_the_batch_is_capped_by_the_flop_rule_and_by_memory():
    full, coarse = (16, 32), (4, 16)
    flop = 16 * 32**2 / (4 * 16**2)  # 16
    cheap = CostTable.from_dicts({full: 100.0, coarse: 0.01})
    assert cheap.batch_factor(*coarse, full) == int(MAX_OVER_FLOPS * flop)
    # Memory, linear in the batch: the budget is the FLOP rule's hungriest shape, per base clip. Full
    # clips of 100 MB at factor 1 against coarse ones of 2 MB at 16 (32): a coarse batch of at most 50.
    tight = CostTable.from_dicts({full: 100.0, coarse: 1.0}, {full: 100.0, coarse: 2.0})
    assert tight.batch_factor(*coarse, full) == 50
    # Where the coarse shape is the hungriest already, the FLOP rule's batch is all that fits.
    assert CostTable.from_dicts({full: 100.0, coarse: 1.0}, {full: 10.0, coarse: 5.0}).batch_factor(
        *coarse, full) == 16
    assert CostTable.from_dicts({full: 1.0, coarse: 50.0}).batch_factor(*coarse, full) == 1  # at least one


def test_the_lr_follows_the_measured_batch():
    table = CostTable.from_dicts(attention_table(shapes_of(MultigridSchedule(MultigridConfig(**SMALL)))))
    measured = MultigridSchedule(MultigridConfig(**SMALL, cost_table=table, gamma=0.1))
    for scaling, rule in (("linear", lambda b: b), ("sqrt", lambda b: b**0.5)):
        cfg = LRConfig(base_lr=0.1, warmup_epochs=0.0, batch_scaling=scaling)
        for stage in measured.stages:
            if stage.epochs and not stage.finetune:
                expected = 0.1 * 0.1**stage.lr_step * rule(stage.batch_factor)
                assert lr_at(stage.start_epoch, measured, cfg) == pytest.approx(expected)
    first = measured.stages[0]
    assert first.batch_factor != MultigridSchedule(MultigridConfig(**SMALL)).stages[0].batch_factor


def test_a_shape_missing_from_the_table_names_it():
    with pytest.raises(ScheduleError, match=r"^cost_table: .*no row for T=\d+, S=\d+"):
        MultigridSchedule(MultigridConfig(**SMALL, cost_table=CostTable.from_dicts({(16, 32): 1.0})))


def profile_rows(schedule, ms, peak_mb=None):
    """`mgvideo profile --json` rows at batch 2; without `peak_mb` (MB per shape) no memory cap."""
    return [{"batch": 2, "frames": t, "crop": s, "sec_per_iter": 2 * ms[(t, s)] / 1e3,
             **({"peak_mb": peak_mb[(t, s)]} if peak_mb else {})}
            for t, s in sorted(shapes_of(schedule) | {(schedule.cfg.frames, schedule.cfg.crop)})]


def test_the_config_key_reads_profile_json_lines_and_lists(tmp_path):
    cfg = load_any_config(Path("configs/synthetic/bench_vit.yaml"))
    flops = build_schedule(cfg)
    rows = profile_rows(flops, attention_table(shapes_of(flops)))
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "p.json").write_text(json.dumps(rows))
    built = [build_schedule(override(cfg, **{"multigrid.batch_rule": "measured",
                                             "multigrid.cost_table": str(tmp_path / name)}))
             for name in ("p.jsonl", "p.json")]
    assert built[0].to_dict() == built[1].to_dict() != flops.to_dict()
    table = read_cost_table(tmp_path / "p.jsonl", "k")
    assert table.ms(16, 32) == pytest.approx(attention_table({(16, 32)})[(16, 32)])


@pytest.mark.parametrize("content", [None, "", "not json", '[{"frames": 4}]'])
def test_a_bad_or_missing_table_is_one_line_naming_the_key_and_file(tmp_path, content):
    path = tmp_path / "cost.json"
    if content is not None:
        path.write_text(content)
    cfg = override(load_config("configs/synthetic/tiny.yaml"), **{
        "multigrid.batch_rule": "measured", "multigrid.cost_table": str(path)})
    with pytest.raises(ConfigError) as err:
        build_schedule(cfg)
    text = str(err.value)
    assert text.startswith(f"multigrid.cost_table: {path}") and "\n" not in text


def test_the_two_keys_go_together():
    for dotted in ({"multigrid.batch_rule": "measured"}, {"multigrid.cost_table": "x.json"}):
        with pytest.raises(ConfigError, match="multigrid.batch_rule"):
            load_config("configs/synthetic/tiny.yaml", [f"{k}={v}" for k, v in dotted.items()])


RECIPES = ["synthetic/bench", "synthetic/bench_vit", "synthetic/tiny", "ssv2/slowfast_r50_16x8_multigrid",
           "kinetics/slowfast_r50_8x8_multigrid"]


@pytest.mark.parametrize("recipe", RECIPES)
def test_no_table_is_the_flop_rule(recipe):
    cfg = load_any_config(Path(f"configs/{recipe}.yaml"))
    assert cfg.multigrid.batch_rule == "flops"
    schedule = build_schedule(cfg)
    assert schedule.cfg.cost_table is None
    # The FLOP rule, recomputed: every stage's factor is round(T0·S0² / (T·S²)).
    volume = cfg.data.frames * cfg.data.crop**2
    for st in schedule.stages:
        assert st.batch_factor == round(volume / (st.frames * st.crop**2))


def test_plan_shows_both_rules_with_their_predicted_times(tmp_path, capsys):
    from mgvideo.cli import main

    recipe = "configs/synthetic/bench_vit.yaml"
    flops = build_schedule(load_any_config(Path(recipe)))
    ms = attention_table(shapes_of(flops))
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in profile_rows(flops, ms)))
    assert main(["plan", "--config", recipe, "--profile", str(tmp_path / "p.jsonl"), "--json"]) == 0
    rules = json.loads(capsys.readouterr().out)["batch_rules"]
    # Per-clip ms from the rows: the predicted step ms of each slot is batch x ms, so the measured rule's
    # steps are far more even than the FLOP rule's.
    assert rules["measured"]["step_spread"] < rules["flops"]["step_spread"]
    for rule in ("flops", "measured"):
        stage = rules[rule]["stages"][0]
        expected = sum(b * ms[(t, s)] for b, t, s in stage["slots"]) / len(stage["slots"])
        assert stage["step_ms"] == pytest.approx(expected, rel=1e-5)
    assert rules["flops"]["stages"][0]["slots"] != rules["measured"]["stages"][0]["slots"]
    assert main(["plan", "--config", recipe, "--profile", str(tmp_path / "p.jsonl")]) == 0
    out = capsys.readouterr().out
    assert "FLOP rule" in out and "measured rule" in out and "predicted training time" in out


def test_plan_without_a_profile_prints_no_rule_comparison(capsys):
    from mgvideo.cli import main

    assert main(["plan", "--config", "configs/synthetic/tiny.yaml", "--json"]) == 0
    assert "batch_rules" not in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("bench", ["bench", "bench_vit"])
def test_the_bench_option_measured_trains_the_shipped_table(bench):
    """`multigrid+measured` reads the table shipped beside the bench (measured on the development CPU):
    it has a row for every shape of the multigrid arm, and each slot gets the batch the table asks for."""
    from mgvideo.bench import tta

    spec, cfg = tta.load_bench(Path(f"configs/synthetic/{bench}.yaml"))
    flops = build_schedule(tta.variant_config(cfg, spec, "multigrid", 0))
    measured_cfg = tta.variant_config(cfg, spec, "multigrid+measured", 0)
    assert measured_cfg.multigrid.batch_rule == "measured"
    table = read_cost_table(measured_cfg.multigrid.cost_table, "multigrid.cost_table")
    measured = build_schedule(measured_cfg)
    assert shapes_of(measured) == shapes_of(flops)
    full = (cfg.data.frames, cfg.data.crop)
    slots = [slot for st in measured.stages[:-1] for slot in st.slots]  # the last: the closing phase
    assert [s.batch_factor for s in slots] == [table.batch_factor(s.frames, s.crop, full) for s in slots]
