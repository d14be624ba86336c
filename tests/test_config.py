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
    assert cfg.mlflow.experiment == "raer"  # not in raer_paper.yaml: the raer defaults (`python experiments/raer.py --help`)


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


def test_every_problem_is_reported_at_once_one_line_each():
    with pytest.raises(ConfigError) as error:
        load_config("raer", ["trainer.max_epochs=1.5", "data.batch_size=eight", "data.num_segmnts=3",
                             "model.loss=cee", "data.val_fraction=2"], environ={})
    lines = str(error.value).splitlines()
    assert lines == [
        "trainer.max_epochs=1.5: expected a whole number >= 0",
        "data.batch_size=eight: expected a whole number >= 1",
        "unknown key 'data.num_segmnts' in the command line; did you mean data.num_segments?",
        "model.loss=cee: expected one of ce, soft_ce, cb_ls (did you mean ce?)",
        "data.val_fraction=2: expected a number in [0, 0.95]",
    ]


def test_a_negative_batch_and_a_list_of_the_wrong_choices_are_refused():
    with pytest.raises(ConfigError, match=r"^data.batch_size=-2: expected a whole number >= 1$"):
        load_config("raer", ["data.batch_size=-2"], environ={})
    with pytest.raises(ConfigError, match=r"model.streams=\[face,body\]: expected a list of face \| context"):
        load_config("raer", ["model.streams=[face,body]"], environ={})


def test_a_value_in_a_named_config_file_is_checked_and_the_file_named(tmp_path):
    bad = tmp_path / "mine.yaml"
    bad.write_text("inherits: raer\ndata:\n  batch_size: many\n")
    with pytest.raises(ConfigError, match=rf"data.batch_size=many: expected a whole number >= 1 \(in {bad}\)"):
        load_config("raer", [f"config={bad}"], environ={})


def test_help_keys_come_with_their_defaults_and_meanings():
    from affectlab.lab.config import help_lines, schema_of

    rows = {key: (default, meaning) for key, default, meaning in help_lines(schema_of("raer"))}
    assert rows["data.batch_size"] == ("8", "clips per batch")
    assert rows["trainer.max_epochs"][0] == "20"
    assert all(meaning for _, meaning in rows.values())


def test_the_console_prints_one_line_per_problem_without_a_traceback(capsys):
    from affectlab.lab.cli import console
    from affectlab.lab.raer import EXPERIMENT

    with pytest.raises(SystemExit) as stopped:
        console(EXPERIMENT, ["trian"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err == ("raer: error: unknown command 'trian'; did you mean train? (commands: train, evaluate, compare, "
                   "describe, prepare, cache, predict; settings are key=value)\n")
    with pytest.raises(ConfigError):  # --debug: the exception itself, with its traceback
        console(EXPERIMENT, ["trian", "--debug"])
