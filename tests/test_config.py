import pytest
from omegaconf import OmegaConf

from affectlab.lab.config import ConfigError, flatten, load_config


def test_defaults_load_and_overrides_apply():
    cfg = load_config("raer", ["trainer.max_epochs=3", "data.num_segments=4"], environ={})
    assert cfg.trainer.max_epochs == 3
    assert cfg.data.num_segments == 4
    assert cfg.mlflow.experiment == "raer"


def test_unknown_key_names_the_closest_valid_ones():
    with pytest.raises(ConfigError, match=r"'data.num_segmnts'.*data.num_segments"):
        load_config("raer", ["data.num_segmnts=3"], environ={})


def test_unknown_trainer_argument_is_checked_against_the_trainer():
    with pytest.raises(ConfigError, match=r"trainer.max_epoch'.*trainer.max_epochs"):
        load_config("raer", ["trainer.max_epoch=2"], environ={})
    cfg = load_config("raer", ["trainer.gradient_clip_val=1.0"], environ={})
    assert cfg.trainer.gradient_clip_val == 1.0


def test_override_without_equals_is_an_error():
    with pytest.raises(ConfigError, match="key=value"):
        load_config("raer", ["trainer.max_epochs"], environ={})


def test_tags_group_is_open():
    cfg = load_config("raer", ["mlflow.tags.person=ada"], environ={})
    assert cfg.mlflow.tags.person == "ada"


def test_launcher_flags_override_trainer_keys():
    env = {"LT_ACCELERATOR": "cpu", "LT_DEVICES": "2", "LT_NUM_NODES": "1", "LT_PRECISION": "bf16-mixed"}
    cfg = load_config("raer", ["trainer.devices=1"], environ=env)
    assert (cfg.trainer.accelerator, cfg.trainer.devices, cfg.trainer.precision) == ("cpu", 2, "bf16-mixed")


def test_paper_config_inherits_the_default():
    cfg = load_config("raer", ["config=raer_paper"], environ={})
    assert cfg.model.backbone == "ViT-B-32"
    assert cfg.data.num_segments == 16
    assert cfg.optim.lr.image_encoder == pytest.approx(1e-5)
    assert cfg.mlflow.experiment == "raer"  # not repeated in raer_paper.yaml, taken from raer.yaml


def test_user_config_file_with_a_bad_key_names_the_file(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("inherits: raer\nmodel:\n  backbon: ViT-B-16\n")
    with pytest.raises(ConfigError, match=r"model.backbon.*mine.yaml.*model.backbone"):
        load_config("raer", [f"config={bad}"], environ={})


def test_unknown_config_name_lists_the_known_ones():
    with pytest.raises(ConfigError, match="raer_paper"):
        load_config("raer", ["config=nope"], environ={})


def test_flatten_gives_dotted_params():
    flat = flatten(OmegaConf.create({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}))
    assert flat == {"a.b": 1, "a.c.d": [1, 2], "e": None}
