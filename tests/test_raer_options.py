"""RAER experiment options on tiny data: soft labels, the class-balanced sampler and loss, skipping bad clips,
per-context test results, and the describe command."""

from __future__ import annotations

import csv
from collections import Counter

import pytest
import torch
from mlflow.tracking import MlflowClient

from affectlab.datasets import make_synthetic_raer
from affectlab.lab.config import ConfigError, load_config
from affectlab.lab.raer import main
from affectlab.lab.raer.train import train as run
from affectlab.lab.sampling import ClassBalancedSampler
from affectlab.models import class_balanced_weights
from builders import TINY_RUN


def test_class_balanced_sampler_draws_classes_equally_and_shards():
    labels = [0] * 90 + [1] * 9 + [2] * 1
    sampler, draws = ClassBalancedSampler(labels, seed=1), Counter()
    for epoch in range(5):
        sampler.set_epoch(epoch)
        draws.update(labels[i] for i in sampler)
    assert all(abs(draws[c] / 500 - 1 / 3) < 0.08 for c in range(3)), draws
    ranks = [list(ClassBalancedSampler(labels, seed=1, rank=r, world_size=2)) for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == 50
    single = list(ClassBalancedSampler(labels, seed=1))
    assert sorted(ranks[0] + ranks[1]) == sorted(single)  # the two ranks split one draw


def test_class_balanced_weights_favour_rare_classes():
    weights = class_balanced_weights([900, 90, 10], beta=0.999)
    assert weights[0] < weights[1] < weights[2]
    assert weights.sum().item() == pytest.approx(3.0)
    assert torch.allclose(class_balanced_weights([5, 5, 5]), torch.ones(3))


@pytest.fixture
def flawed_raer(tmp_path):
    """A tiny synthetic RAER with 5 votes per clip, one corrupt training frame and one test line naming no class."""
    root = make_synthetic_raer(tmp_path / "raer", num_train=25, num_test=10, num_frames=4, num_votes=5)
    train_lines = (root / "annotation" / "train.txt").read_text().splitlines()
    corrupt_dir = train_lines[0].split()[0]
    (root / "images" / corrupt_dir / "2.jpg").write_bytes(b"not a jpeg")
    with (root / "annotation" / "test.txt").open("a") as handle:
        handle.write("Class/Classroom/999999 4 1 1 Boredom 1 1\n")
    return root


def test_skipped_clips_soft_labels_and_per_context_results_reach_mlflow(workdir, flawed_raer):
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    cfg = load_config("raer", [*TINY_RUN, f"data.root={flawed_raer}", "data.on_bad_clip=skip", "model.loss=soft_ce",
                               "data.sampler=class_balanced", f"mlflow.tracking_uri={uri}",
                               f"checkpoint_dir={workdir}/ckpt"], environ={})
    with pytest.warns(UserWarning, match=r"left out 1 bad clip\(s\) of the test split"):
        metrics = run(cfg)
    client = MlflowClient(uri)
    logged = client.search_runs([client.get_experiment_by_name("raer").experiment_id])[0]
    assert logged.data.metrics["data/skipped/train"] == 1
    assert logged.data.metrics["data/skipped/test"] == 1
    contexts = {k.split("/")[2] + "/" + k.split("/")[3] for k in logged.data.metrics if k.startswith("test/context/")}
    clips = {c: logged.data.metrics[f"test/context/{c}/clips"] for c in contexts}
    assert sum(clips.values()) == 10  # every test clip counted in exactly one context
    war = sum(logged.data.metrics[f"test/context/{c}/war"] * n for c, n in clips.items()) / 10
    assert war == pytest.approx(metrics["test/war"], abs=1e-5)  # the contexts' WARs add up to the overall WAR
    local = client.download_artifacts(logged.info.run_id, "test_by_context.csv", str(workdir))
    with open(local) as handle:
        rows = list(csv.DictReader(handle))
    assert {row["context"] for row in rows} == contexts
    skipped = client.download_artifacts(logged.info.run_id, "skipped_clips.txt", str(workdir))
    assert "Boredom" in open(skipped).read()


def test_bad_clip_is_an_error_by_default(workdir, flawed_raer):
    cfg = load_config("raer", [*TINY_RUN, f"data.root={flawed_raer}", f"checkpoint_dir={workdir}/ckpt",
                               f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}"], environ={})
    with pytest.raises(Exception, match=r"2\.jpg: unreadable frame"):
        run(cfg)


def test_describe_prints_counts_and_agreement(flawed_raer, capsys):
    summary = main(["describe", f"data.root={flawed_raer}", "data.on_bad_clip=skip", "data.val_fraction=0.2"])
    assert summary["train"]["clips"] + summary["val"]["clips"] == 25 and summary["test"]["clips"] == 10
    assert summary["test"]["counts"] == [2, 2, 2, 2, 2]
    assert summary["train"]["annotators"] == 5 and 0.0 < summary["train"]["kappa"] <= 1.0
    out = capsys.readouterr().out
    assert "Fleiss' kappa" in out and "Neutrality" in out
    four = main(["describe", f"data.root={flawed_raer}", "data.label_set=four", "data.on_bad_clip=skip"])
    assert len(four["test"]["counts"]) == 4 and sum(four["test"]["counts"]) == 10


def test_cache_command_writes_crops_that_the_datamodule_then_reads(tmp_path):
    from affectlab.lab.raer.data import RaerDataModule
    from affectlab.lab.raer.nets import build_net

    root = make_synthetic_raer(tmp_path / "raer", num_train=10, num_test=5, num_frames=3)
    args = [f"data.root={root}", "data.num_segments=2", "data.val_fraction=0.2"]
    folder = main(["cache", *args])
    assert folder == root / "crops" / "48px-margin20" and (folder / "crops.json").is_file()
    assert len(list(folder.rglob("faces.npy"))) == 15
    cfg = load_config("raer", args, environ={})
    _, _, inputs = build_net(cfg)
    datamodule = RaerDataModule(cfg.data, image_size=inputs.image_size, mean=inputs.mean, std=inputs.std)
    datamodule.setup("test")
    assert datamodule.test_set.cache == folder


def test_a_missing_data_root_is_said_before_any_weights_are_loaded(tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    from affectlab.lab.raer.train import build

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))  # offline, nothing cached: a download would fail
    cfg = load_config("raer", ["config=raer_paper", f"data.root={tmp_path / 'no-raer'}"], environ={})
    with pytest.raises(ConfigError, match=r"data.root=.*no-raer.* is not a folder"):
        build(cfg)
