import pytest
import yaml

from vdi.config import ConfigError, check_overrides, flatten, list_presets, load_config, to_yaml


@pytest.mark.parametrize("preset", list_presets())
def test_every_preset_loads_and_validates(preset):
    cfg = load_config(preset)
    assert cfg.model.num_pre_clips % cfg.model.num_clips == 0
    if not preset.startswith("synthetic") and preset != "tiny":  # the real benchmarks keep the paper's 1/10
        assert cfg.optim.text_lr_ratio == pytest.approx(0.1)


def test_presets_carry_the_paper_and_mmn_hyperparameters():
    charades = load_config("charades_sta")
    assert (charades.model.num_pre_clips, charades.model.num_clips) == (32, 16)
    assert charades.model.pooling_counts == [15]
    assert (charades.model.kernel_size, charades.model.num_conv_layers) == (5, 8)
    assert (charades.model.hidden_size, charades.model.joint_size) == (512, 256)
    assert (charades.loss.tau_video, charades.loss.tau_sentence, charades.loss.margin) == (0.1, 0.1, 0.4)
    assert charades.loss.lambda_cl == 0.05
    assert (charades.loss.min_iou, charades.loss.max_iou) == (0.5, 1.0)
    assert (charades.loss.lambda_vc, charades.loss.lambda_sd) == (0.5, 0.01)
    assert charades.eval.nms_threshold == 0.5
    assert (charades.optim.lr, charades.optim.batch_size) == (1e-4, 48)
    assert charades.model.clip.name == "ViT-B-32"
    anet = load_config("activitynet")
    assert (anet.model.num_pre_clips, anet.model.num_clips) == (256, 64)
    assert anet.model.pooling_counts == [15, 8, 8]
    assert (anet.model.kernel_size, anet.model.num_conv_layers) == (9, 4)
    assert (anet.loss.margin, anet.loss.lambda_cl, anet.optim.lr, anet.optim.batch_size) == (
        0.3,
        0.1,
        8e-4,
        48,
    )
    # the CG presets inherit their benchmark's model and evaluate the novel-word split
    assert load_config("charades_cg").model.num_clips == 16
    assert load_config("activitynet_cg").model.num_clips == 64
    assert "novel_word" in load_config("charades_cg").data.eval_splits


def test_dotlist_overrides_are_typed():
    overrides = [
        "model.num_clips=8",
        "model.pooling_counts=[7]",
        "loss.lambda_vc=0.2",
        "injection.spatial_dynamic=lstm",
    ]
    cfg = load_config("charades_sta", overrides)
    assert cfg.model.num_clips == 8 and isinstance(cfg.model.num_clips, int)
    assert cfg.loss.lambda_vc == 0.2
    assert cfg.injection.spatial_dynamic == "lstm"


def test_unknown_key_names_the_key_and_a_suggestion():
    with pytest.raises(ConfigError, match=r"unknown config key 'model.num_clip'.*model.num_clips"):
        load_config("charades_sta", ["model.num_clip=16"])
    with pytest.raises(ConfigError, match=r"unknown config key 'lambda_vc'.*loss.lambda_vc"):
        check_overrides(["lambda_vc=0.3"])


def test_unknown_key_in_a_yaml_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: tiny\noptim:\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"'optim.learning_rate'.*mine.yaml"):
        load_config(str(path))


def test_bad_values_are_rejected():
    with pytest.raises(ConfigError, match=r"model\.num_clips"):
        load_config("charades_sta", ["model.num_clips=sixteen"])
    with pytest.raises(ConfigError, match=r"injection\.visual_context"):
        load_config("charades_sta", ["injection.visual_context=banana"])
    with pytest.raises(ConfigError, match=r"multiple of"):
        load_config("charades_sta", ["model.num_clips=12"])
    with pytest.raises(ConfigError, match="pooling_counts"):
        load_config("charades_sta", ["model.pooling_counts=[20]"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config("charades_sta", ["model.num_clips"])
    with pytest.raises(ConfigError, match="unknown preset 'charades'"):
        load_config("charades")
    with pytest.raises(ConfigError, match=r"eval\.select_split 'val' is not one of data\.eval_splits"):
        load_config("charades_sta", ["eval.select_split=val"])
    with pytest.raises(ConfigError, match=r"eval\.epoch_splits \['val'\] are not among data\.eval_splits"):
        load_config("charades_sta", ["eval.epoch_splits=[val]"])
    with pytest.raises(ConfigError, match=r"must include eval\.select_split 'val'"):
        load_config("synthetic", ["eval.epoch_splits=[test]"])
    with pytest.raises(ConfigError, match=r"eval\.select_metric 'R2@0\.5'"):
        load_config("charades_sta", ["eval.select_metric=R2@0.5"])
    with pytest.raises(ConfigError, match="ZeRO-3 is not supported"):
        load_config("charades_sta", ["dist.zero_stage=3"])


def test_yaml_roundtrip_and_flatten(tmp_path):
    cfg = load_config("tiny", ["run.seed=7"])
    path = tmp_path / "resolved.yaml"
    path.write_text(to_yaml(cfg))
    assert load_config(str(path)) == cfg
    flat = flatten(cfg)
    assert flat["run.seed"] == 7 and flat["model.clip.name"] == "vdi-test-tiny"


def test_base_cycle_is_reported(tmp_path):
    (tmp_path / "a.yaml").write_text(f"base: {tmp_path / 'b.yaml'}\n")
    (tmp_path / "b.yaml").write_text(f"base: {tmp_path / 'a.yaml'}\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(str(tmp_path / "a.yaml"))


def test_off_is_accepted_for_none():
    # YAML 1.1 reads `off` as false; both spellings switch the module off
    cfg = load_config("tiny", ["injection.visual_context=off", "injection.spatial_dynamic=none"])
    assert (cfg.injection.visual_context, cfg.injection.spatial_dynamic) == ("none", "none")


@pytest.mark.parametrize(
    "override, key",
    [
        ("eval.nms_threshold=2.0", "eval.nms_threshold"),
        ("eval.nms_threshold=0", "eval.nms_threshold"),
        ("model.num_clips=0", "model.num_clips"),
        ("optim.max_epochs=0", "optim.max_epochs"),
        ("optim.lr=-0.1", "optim.lr"),
        ("eval.iou_thresholds=[0.5,1.5]", "eval.iou_thresholds"),
        ("eval.recall_ks=[0]", "eval.recall_ks"),
        ("track.log_every_steps=0", "track.log_every_steps"),
        ("data.val_fraction=1.0", "data.val_fraction"),
    ],
)
def test_out_of_range_values_fail_at_load_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config("synthetic", [override])


HYPERPARAMETER_SECTIONS = ("model", "injection", "loss", "optim")


def test_paper_hyperparameters_are_written_once_in_their_preset():
    """Every model / injection / loss / optim value of the paper preset (and eval's ranking
    settings) has no dataclass default: the YAML is their one place."""
    from omegaconf import OmegaConf

    from vdi.config import PAPER_PRESET, PRESET_DIR, Config

    preset = yaml.safe_load((PRESET_DIR / f"{PAPER_PRESET}.yaml").read_text())
    schema = OmegaConf.structured(Config)
    keys = [f"{section}.{key}" for section in HYPERPARAMETER_SECTIONS for key in preset[section] if key != "clip"]
    keys += [f"model.clip.{key}" for key in preset["model"]["clip"]]
    keys += ["eval.nms_threshold", "eval.recall_ks", "eval.iou_thresholds"]
    assert len(keys) > 20
    missing = [
        key
        for key in keys
        if OmegaConf.is_missing(OmegaConf.select(schema, key.rsplit(".", 1)[0]), key.rsplit(".", 1)[1])
    ]
    assert missing == keys


def test_a_yaml_without_the_paper_preset_names_the_missing_key(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  num_clips: 8\n")
    with pytest.raises(
        ConfigError, match=r"config key 'model.clip.name' has no value in .*mine.yaml.*base: charades_sta"
    ):
        load_config(str(path))
    path.write_text("base: charades_sta\nmodel:\n  hidden_size: 256\n")
    assert load_config(str(path)).model.hidden_size == 256
    # no preset at all is the paper's
    assert load_config(None).loss.lambda_vc == load_config("charades_sta").loss.lambda_vc == 0.5


def _against_the_benchmark(preset: str) -> tuple[dict, dict, set[str]]:
    """The preset's and the `synthetic` benchmark's flattened configs, and the keys they differ in."""
    mine, benchmark = flatten(load_config(preset)), flatten(load_config("synthetic"))
    return mine, benchmark, {key for key in benchmark if mine[key] != benchmark[key]} - {"run.preset"}


def test_the_demo_preset_is_the_benchmark_recipe_on_a_shorter_schedule():
    # `make demo` must train what the README's tables train, only for fewer epochs: any other
    # difference would make the demo's figures a different model's.
    demo, benchmark, differing = _against_the_benchmark("synthetic_demo")
    assert differing == {"optim.max_epochs", "optim.milestones"}
    assert demo["optim.max_epochs"] < benchmark["optim.max_epochs"]
    assert max(demo["optim.milestones"]) < demo["optim.max_epochs"]


def test_the_long_preset_is_the_benchmark_recipe_on_a_longer_schedule():
    # the 36-epoch benchmark may differ from the 18-epoch one only in its schedule, so that the
    # two tables compare one recipe trained for two lengths
    long, benchmark, differing = _against_the_benchmark("synthetic_long")
    assert differing == {"optim.max_epochs", "optim.milestones"}
    assert long["optim.max_epochs"] == 2 * benchmark["optim.max_epochs"]
    assert max(long["optim.milestones"]) < long["optim.max_epochs"]
