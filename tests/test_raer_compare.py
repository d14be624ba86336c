"""The facial-dynamics baseline and the comparison runner: methods x seeds as nested MLflow runs and a mean ± std
table."""

from __future__ import annotations

import csv
import statistics

import pytest
import torch
from mlflow.tracking import MlflowClient

from affectlab.lab.config import ConfigError, load_config
from affectlab.lab.raer.compare import compare
from affectlab.lab.raer.nets import build_net
from affectlab.models import FormerDfer
from builders import TINY_RUN


def test_former_dfer_maps_face_clips_to_logits_with_named_param_groups():
    net = FormerDfer("test_resnet", num_classes=4, num_frames=6, temporal_heads=4)
    logits = net(face=torch.randn(2, 6, 3, 32, 32))
    assert logits.shape == (2, 4)
    groups = net.param_groups()
    assert set(groups) == {"image_encoder", "temporal", "projection"}
    assert sum(p.numel() for g in groups.values() for p in g) == sum(p.numel() for p in net.parameters())


def test_former_dfer_from_config_uses_its_own_input_size_and_rejects_context(workdir):
    net, classes, inputs = build_net(load_config("raer", ["model.name=former_dfer", "model.streams=[face]",
                                                          "data.label_set=four"], environ={}))
    assert isinstance(net, FormerDfer) and len(classes) == 4 and inputs.image_size == 48
    with pytest.raises(ConfigError, match="reads faces only"):
        build_net(load_config("raer", ["model.name=former_dfer"], environ={}))


def test_comparison_logs_a_parent_with_one_child_per_method_and_seed(workdir):
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    cfg = load_config("raer", [*TINY_RUN, "compare.seeds=[0,1]", "compare.only=[CLIP-CAER,Former-DFER]",
                               f"mlflow.tracking_uri={uri}", f"checkpoint_dir={workdir}/ckpt"], environ={})
    rows = compare(cfg)
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("raer").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert sorted((r.data.tags["method"], r.data.tags["seed"]) for r in children) == [
        ("CLIP-CAER", "0"), ("CLIP-CAER", "1"), ("Former-DFER", "0"), ("Former-DFER", "1")]
    assert {r.data.params["model.name"] for r in children} == {"clip_caer", "former_dfer"}
    for row in rows:  # the parent's mean ± std are those of its children
        uars = [r.data.metrics["test/uar"] for r in children if r.data.tags["method"] == row["method"]]
        assert row["test/uar_mean"] == pytest.approx(statistics.fmean(uars), abs=1e-6)
        assert parent.data.metrics[f"{row['method']}/test/uar_std"] == pytest.approx(statistics.stdev(uars), abs=1e-6)
    table = client.download_artifacts(parent.info.run_id, "comparison.csv", str(workdir))
    with open(table) as handle:
        assert [r["method"] for r in csv.DictReader(handle)] == ["CLIP-CAER", "Former-DFER"]


def test_unknown_method_is_a_config_error(workdir):
    cfg = load_config("raer", ["compare.only=[CLIP-CAER,Transformer-XL]"], environ={})
    with pytest.raises(ConfigError, match=r"unknown method\(s\) \['Transformer-XL'\]"):
        compare(cfg)

