"""Config loading: YAML + overrides, type and range checks, errors that name the key and file."""

import pytest

from mgvideo.config import Config, fingerprint, from_dict, load_config, override, save_config, to_dict
from mgvideo.errors import ConfigError


def write(tmp_path, text):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_yaml_and_overrides_apply(tmp_path):
    path = write(tmp_path, "solver:\n  base_lr: 0.2\n  steps: [0, 5]\n  max_epoch: 8\ndata:\n  frames: 4\n")
    cfg = load_config(path, ["solver.momentum=0.5", "train.amp=bf16", "multigrid.short_cycle=false"])
    assert cfg.solver.base_lr == 0.2 and cfg.solver.steps == [0, 5] and cfg.data.frames == 4
    assert cfg.solver.momentum == 0.5 and cfg.train.amp == "bf16" and cfg.multigrid.short_cycle is False


def test_a_mapping_entry_is_set_and_the_others_kept(tmp_path):
    path = write(tmp_path, "model:\n  name: vit_tiny\n  options: {embed_dim: 64, depth: 3}\n")
    cfg = load_config(path, ["model.options.pos_embed=per_grid", "model.options.depth=2"])
    assert cfg.model.options == {"embed_dim": 64, "depth": 2, "pos_embed": "per_grid"}
    with pytest.raises(ConfigError, match="command line: solver.base_lr is not a mapping"):
        load_config(path, ["solver.base_lr.x=1"])
    with pytest.raises(ConfigError, match="unknown key 'model.optons.depth'"):
        load_config(path, ["model.optons.depth=1"])


def test_int_is_accepted_for_float_and_converted(tmp_path):
    cfg = load_config(None, ["solver.base_lr=1"])
    assert isinstance(cfg.solver.base_lr, float)


def test_exponent_without_a_dot_is_a_number(tmp_path):
    # YAML 1.1 reads 1e-4 as a string; a float field takes it as the number it means.
    cfg = load_config(write(tmp_path, "solver:\n  weight_decay: 5e-5\n"), ["solver.base_lr=1e-2"])
    assert cfg.solver.weight_decay == 5e-5 and cfg.solver.base_lr == 0.01


def test_unknown_key_names_file_line_and_suggestion(tmp_path):
    path = write(tmp_path, "solver:\n  base_lr: 0.1\n  base_lrr: 0.2\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:3: unknown key 'solver\.base_lrr'.*solver\.base_lr"):
        load_config(path)


def test_unknown_section_and_override_key():
    with pytest.raises(ConfigError, match="unknown section 'solvr'"):
        load_config(None, ["solvr.base_lr=1"])
    with pytest.raises(ConfigError, match="command line: unknown key 'train.sed'"):
        load_config(None, ["train.sed=1"])


@pytest.mark.parametrize(
    "item, message",
    [
        ("solver.batch_size=abc", "solver.batch_size must be an integer"),
        ("solver.base_lr=fast", "solver.base_lr must be a number"),
        ("solver.base_lr=nan", "solver.base_lr must be a finite number"),
        ("solver.weight_decay=.inf", "solver.weight_decay must be a finite number"),
        ("solver.nesterov=2", "solver.nesterov must be true or false"),
        ("train.amp=fp8", "train.amp must be one of"),
        ("solver.steps=[0, x]", r"solver.steps\[1\] must be an integer"),
        ("solver.batch_size=0", "solver.batch_size must be positive"),
        ("solver.steps=[0, 300]", "max_epoch"),
        ("solver.label_smoothing=1.5", "label_smoothing"),
        ("noequals", "expected key=value"),
    ],
)
def test_bad_values_raise_config_error_naming_the_key(item, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [item])


def test_bad_value_in_file_names_line(tmp_path):
    path = write(tmp_path, "data:\n  frames: 8\n  crop: big\n")
    with pytest.raises(ConfigError, match=r"run\.yaml:3: data\.crop must be an integer"):
        load_config(path)


def test_roundtrip_through_yaml(tmp_path):
    cfg = load_config(None, ["model.options={width: 8}", "solver.base_lr=0.3"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert to_dict(again) == to_dict(cfg) and from_dict(to_dict(cfg)) == cfg


def test_fingerprint_ignores_runtime_keys_only():
    cfg = Config()
    assert fingerprint(cfg) == fingerprint(override(cfg, **{"data.workers": 0, "train.log_period": 3}))
    assert fingerprint(cfg) != fingerprint(override(cfg, **{"solver.base_lr": 0.2}))
    assert fingerprint(cfg, [1, 2]) != fingerprint(cfg, [1, 3])


def test_precise_bn_clips_defaults_to_the_reference_batch_count():
    cfg = Config()
    assert (cfg.train.precise_bn_batches, cfg.train.precise_bn_clips) == (200, 0)
    with pytest.raises(ConfigError, match="train.precise_bn_clips must be >= 0"):
        load_config(None, ["train.precise_bn_clips=-1"])


def test_max_failed_fraction_is_a_fraction():
    assert load_config(None, ["test.max_failed_fraction=0"]).test.max_failed_fraction == 0.0
    with pytest.raises(ConfigError, match=r"test.max_failed_fraction must be in \[0, 1\], got 1.5"):
        load_config(None, ["test.max_failed_fraction=1.5"])


def test_one_evaluation_cadence_at_a_time():
    base = ["multigrid.long_cycle=false", "multigrid.short_cycle=false"]
    with pytest.raises(ConfigError, match=r"one evaluation cadence, not train\.eval_period and train\.eval_"):
        load_config(None, [*base, "train.eval_period=2", "train.eval_points=5"])
    assert load_config(None, [*base, "train.eval_points=5"]).train.eval_points == 5


def test_runtime_keys_are_marked_on_their_fields_and_the_fingerprint_is_pinned():
    from mgvideo.config import runtime_keys

    assert runtime_keys() == {
        "data.workers", "data.cache_dir", "data.cache_max_gb", "data.store", "train.device",
        "train.pin_memory", "train.compile", "train.checkpoint_minutes", "train.checkpoint_every_iters",
        "train.log_period", "train.eval_batch_size", "train.dist_timeout_minutes",
        "solver.max_clips_per_pass", "test.clips", "test.crops", "test.crop_size", "test.ensemble",
        "test.batch_size", "test.max_failed_fraction", "multigrid.cost_table"}
    # Resumes compare fingerprints: a new value here would refuse every saved run.
    assert fingerprint(Config()) == "4321e4bc61766841"
    assert fingerprint(load_config("configs/synthetic/tiny.yaml"), [1, 2]) == "8793403922545cb5"


def test_each_section_validates_itself():
    cfg = Config()
    for section in ("data", "model", "multigrid", "solver", "train", "test"):
        getattr(cfg, section).validate("here")  # the defaults pass
    cfg.solver.base_lr = 0.0
    with pytest.raises(ConfigError, match=r"^here: solver.base_lr must be positive, got 0.0$"):
        cfg.solver.validate("here")
    cfg.test.crop_size = -1
    with pytest.raises(ConfigError, match=r"^here: test.crop_size must be >= 0, got -1$"):
        cfg.test.validate("here")



@pytest.mark.parametrize("key, value, default, bad, refusal", [
    # A timeout fits the machine a run is on: a resume elsewhere may change it.
    ("train.dist_timeout_minutes", 2.5, 10.0, "0", "must be positive, got 0"),
    # A memory limit fits the device a run is on; it may not change the BN groups (engine/device.py), so
    # a resume on a device with less memory may change it.
    ("solver.max_clips_per_pass", 16, 0, "-1", "must be >= 0, got -1"),
])
def test_a_device_knob_is_a_checked_runtime_key(key, value, default, bad, refusal):
    section, name = key.split(".")
    cfg = load_config(None, [f"{key}={value}"])
    assert getattr(getattr(cfg, section), name) == value
    assert getattr(getattr(Config(), section), name) == default
    assert fingerprint(cfg) == fingerprint(Config())
    with pytest.raises(ConfigError, match=f"command line: {key} {refusal}"):
        load_config(None, [f"{key}={bad}"])
