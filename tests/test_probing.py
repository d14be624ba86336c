"""Layer-wise probing: extraction against transformers' own hidden states, the feature cache, the batched probes,
zero-shot parsing, malleability and persistence, and the depth figure's earlier runs (the experiment end to end:
test_probing_experiment.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded by these tests

from transformers import AutoModel, AutoTokenizer

from builders import CHAT_TEMPLATE, minilm_dir, tiny_decoder
from affectlab.probing import (
    DEPTH_FRACTIONS,
    CacheMismatchError,
    ExtractionError,
    FeatureCache,
    HiddenStateExtractor,
    LayerProbes,
    TruncationWarning,
    cached_features,
    find_blocks,
    fit_probes,
    load_model,
    parse_emotion,
    predict,
    probe_optimizer,
    resolve_pooling,
    score_answers,
    select_layers,
)

TEXTS = [
    "I can't believe you did that, I'm furious!",
    "ok",
    "What a lovely surprise, thank you so much for coming all this way",
    "The meeting is at three.",
    "no no no no",
]


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(minilm_dir())


@pytest.fixture(scope="module")
def minilm():
    return AutoModel.from_pretrained(minilm_dir()).eval()


@pytest.fixture(scope="module", params=["qwen3", "llama"])
def decoder(request, tokenizer):
    return tiny_decoder(request.param, tokenizer.vocab_size)


def reference_states(model, tokenizer, text: str) -> tuple[torch.Tensor, ...]:
    """transformers' own hidden states of one unpadded text."""
    with torch.no_grad():
        return model(**tokenizer([text], return_tensors="pt"), output_hidden_states=True).hidden_states


def test_depth_fractions_pick_the_papers_layers():
    assert select_layers(28, DEPTH_FRACTIONS) == [0, 7, 14, 21, 28]  # Qwen3-0.6B
    assert select_layers(36, DEPTH_FRACTIONS) == [0, 9, 18, 27, 36]  # Qwen3-4B
    assert select_layers(6, "all") == list(range(7))
    assert select_layers(6, [3, 0.5, 6]) == [3, 6]
    with pytest.raises(ExtractionError, match="layers 0..6"):
        select_layers(6, [7])


@pytest.mark.parametrize("side", ["right", "left"])
def test_last_token_features_equal_transformers_hidden_states(decoder, tokenizer, side):
    tokenizer.padding_side = side
    features = HiddenStateExtractor(decoder, tokenizer, "all", pooling="last")(TEXTS)
    for row, text in enumerate(TEXTS):
        states = reference_states(decoder, tokenizer, text)
        expected = torch.stack([layer[0, -1] for layer in states])
        torch.testing.assert_close(features[:, row], expected, atol=1e-4, rtol=1e-4)
    tokenizer.padding_side = "right"


def test_mean_pooling_of_an_encoder_ignores_padding(minilm, tokenizer):
    features = HiddenStateExtractor(minilm, tokenizer, [0, 3, 6], pooling="mean")(TEXTS)
    for row, text in enumerate(TEXTS):
        states = reference_states(minilm, tokenizer, text)
        expected = torch.stack([states[layer][0].mean(0) for layer in (0, 3, 6)])
        torch.testing.assert_close(features[:, row], expected, atol=1e-4, rtol=1e-4)


def test_auto_pooling_means_the_tokens_of_encoders_and_takes_the_last_token_of_decoders(minilm, tokenizer, decoder):
    assert resolve_pooling(minilm, "auto") == "mean" and resolve_pooling(decoder, "auto") == "last"
    assert resolve_pooling(decoder.model, "auto") == "last"  # the bare decoder, without its LM head, too
    assert resolve_pooling(minilm, "last") == "last" and resolve_pooling(decoder, "mean") == "mean"  # as asked
    assert HiddenStateExtractor(minilm, tokenizer, [6]).pooling == "mean"  # auto is the default
    assert HiddenStateExtractor(decoder, tokenizer, [2]).pooling == "last"
    with pytest.raises(ExtractionError, match="pooling='cls': expected 'auto' or one of"):
        resolve_pooling(minilm, "cls")


def test_no_block_above_the_deepest_requested_layer_runs(tokenizer):
    model = tiny_decoder("qwen3", tokenizer.vocab_size, layers=8)
    calls = [0] * 8
    for index, block in enumerate(find_blocks(model.model)):
        block.register_forward_hook(lambda *_, i=index: calls.__setitem__(i, calls[i] + 1))
    extractor = HiddenStateExtractor(model, tokenizer, [0.0, 0.5], batch_size=2)
    features = extractor(TEXTS)
    assert features.shape == (2, len(TEXTS), 64)
    assert calls == [3, 3, 3, 3, 0, 0, 0, 0]  # 3 batches of at most 2 texts; blocks 5-8 never run
    assert extractor.stats.texts == 5 and extractor.stats.batches == 3


def test_batches_group_texts_of_similar_length(minilm, tokenizer):
    extractor = HiddenStateExtractor(minilm, tokenizer, [6], batch_size=8, batch_tokens=40)
    lengths = [3, 30, 4, 29, 5, 3, 28]
    batches = extractor.batches(lengths)
    assert sorted(i for batch in batches for i in batch) == list(range(len(lengths)))
    for batch in batches:
        widths = [lengths[i] for i in batch]
        assert max(widths) * len(batch) <= 40 or len(batch) == 1
    assert [lengths[i] for i in batches[0]] == [30]  # the longest first, alone under the token budget


def test_long_texts_are_truncated_and_counted(minilm, tokenizer):
    extractor = HiddenStateExtractor(minilm, tokenizer, [6], max_length=8)
    with pytest.warns(TruncationWarning, match="2 of 5 texts"):
        extractor(TEXTS)
    assert extractor.stats.truncated == 2


def test_chat_format_needs_a_template_and_pools_the_assistant_header(tokenizer):
    model = tiny_decoder("llama", tokenizer.vocab_size)
    with pytest.raises(ExtractionError, match="chat template"):
        HiddenStateExtractor(model, tokenizer, "all", input_format="chat")
    chat_tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    chat_tokenizer.chat_template = CHAT_TEMPLATE
    extractor = HiddenStateExtractor(model, chat_tokenizer, [4], input_format="chat")
    ids = extractor.encode(["hello"])[0]
    assert chat_tokenizer.decode(ids).endswith("< | assistant | >")
    raw = HiddenStateExtractor(model, chat_tokenizer, [4], input_format="instruction")
    assert not torch.allclose(extractor(["hello"]), raw(["hello"]))


def test_a_model_that_cannot_be_loaded_is_a_clear_error(tmp_path: Path):
    with pytest.raises(ExtractionError, match="'nobody/no-such-model'.*cannot be loaded"):
        load_model("nobody/no-such-model")


def test_second_run_extracts_nothing_and_reads_the_same_features(tmp_path: Path, minilm, tokenizer):
    extractor = HiddenStateExtractor(minilm, tokenizer, [0, 6])
    first, cache, extracted = cached_features(extractor, TEXTS, model="minilm", root=tmp_path, shard_size=2)
    assert extracted == 3 and cache.num_shards == 3
    again, _, extracted = cached_features(extractor, TEXTS, model="minilm", root=tmp_path, shard_size=2)
    assert extracted == 0 and torch.equal(first, again)
    manifest = json.loads((cache.folder / "manifest.json").read_text())
    assert manifest["key"]["layers"] == [0, 6] and manifest["key"]["pooling"] == "mean"  # auto, for an encoder
    assert manifest["key"]["input_format"] == "raw" and manifest["key"]["num_texts"] == 5
    record = manifest["shards"][1]
    assert record["bytes"] == (cache.folder / "shards" / "00001.safetensors").stat().st_size
    assert len(record["sha256"]) == 64 and record["start"] == 2 and record["stop"] == 4


def test_interrupted_extraction_resumes_and_never_reads_a_damaged_shard(tmp_path: Path, minilm, tokenizer):
    extractor = HiddenStateExtractor(minilm, tokenizer, [6])
    calls = []

    class Interrupted(Exception):
        pass

    def failing(texts):
        if len(calls) == 2:
            raise Interrupted
        calls.append(len(texts))
        return extractor(texts)

    failing.layers, failing.pooling, failing.input_format = extractor.layers, extractor.pooling, "raw"
    failing.max_length, failing.model = extractor.max_length, extractor.model
    with pytest.raises(Interrupted):
        cached_features(failing, TEXTS, model="minilm", root=tmp_path, shard_size=2)
    _, cache, extracted = cached_features(extractor, TEXTS, model="minilm", root=tmp_path, shard_size=2)
    assert calls == [2, 2] and extracted == 1  # only the third shard was left to do
    shard = cache.folder / "shards" / "00000.safetensors"
    shard.write_bytes(shard.read_bytes()[:-7])  # a half-written file under the final name
    assert FeatureCache(cache.folder, cache.key, hidden_size=384, shard_size=2).missing() == [0]
    features, _, extracted = cached_features(extractor, TEXTS, model="minilm", root=tmp_path, shard_size=2)
    assert extracted == 1
    torch.testing.assert_close(features, extractor(TEXTS))


def test_ranks_extract_disjoint_shards(tmp_path: Path, minilm, tokenizer):
    extractor = HiddenStateExtractor(minilm, tokenizer, [6])
    common = dict(model="minilm", root=tmp_path, shard_size=1, world_size=2)
    features, cache, extracted = cached_features(extractor, TEXTS, rank=1, **common)
    assert features is None and extracted == 2 and cache.missing(0, 2) == [0, 2, 4]
    features, _, extracted = cached_features(extractor, TEXTS, rank=0, **common)
    assert extracted == 3 and features.shape == (1, 5, 384)


def test_a_cache_folder_of_other_features_is_refused(tmp_path: Path, minilm, tokenizer):
    folder = tmp_path / "features"
    cached_features(HiddenStateExtractor(minilm, tokenizer, [6], pooling="last"), TEXTS, model="minilm", folder=folder)
    mean = HiddenStateExtractor(minilm, tokenizer, [6], pooling="mean")
    with pytest.raises(CacheMismatchError, match="key.pooling is 'last', expected 'mean'"):
        cached_features(mean, TEXTS, model="minilm", folder=folder)


def test_batched_probes_train_each_layer_independently():
    torch.manual_seed(0)
    probes = LayerProbes(num_layers=3, hidden_size=8, num_classes=7, kind="mlp", width=16)
    features, labels = torch.randn(3, 10, 8), torch.randint(0, 7, (10,))
    loss_of_layer_0 = torch.nn.functional.cross_entropy(probes(features)[0], labels)
    loss_of_layer_0.backward()
    assert probes.w1.grad[0].abs().sum() > 0
    assert torch.all(probes.w1.grad[1:] == 0) and torch.all(probes.w2.grad[1:] == 0)


def test_probes_learn_what_each_layer_holds():
    torch.manual_seed(0)
    labels = torch.randint(0, 7, (800,))
    signal = torch.nn.functional.one_hot(labels, 7).float() @ torch.randn(7, 16) * 6
    features = torch.stack([torch.randn(800, 16), signal + torch.randn(800, 16)])  # layer 0 noise, layer 1 signal
    for kind in ("mlp", "linear"):
        probes = LayerProbes(2, 16, 7, kind=kind)
        losses = fit_probes(probes, features[:, :600], labels[:600], epochs=3, lr=3e-3)
        accuracy = (predict(probes, features[:, 600:]).argmax(-1) == labels[600:]).float().mean(1)
        assert accuracy[0] < 0.3 and accuracy[1] > 0.85, (kind, accuracy)
        assert losses[-1] < losses[0]


def test_warm_up_then_cosine_decay():
    probes = LayerProbes(1, 4, 7, kind="linear")
    optimizer, scheduler = probe_optimizer(probes, total_steps=100, lr=1e-4)
    rates = []
    for _ in range(100):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(1e-5) and rates[9] == pytest.approx(1e-4)  # linear over the first 10%
    assert rates[10] == pytest.approx(1e-4) and rates[55] == pytest.approx(5e-5, rel=0.05)
    assert rates[-1] < 1e-6 and all(a >= b for a, b in zip(rates[10:], rates[11:]))


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ('{"emotion": "joy"}', "joy"),
        ('Sure! Here it is: {"emotion": "Anger"} Hope that helps.', "anger"),
        ("{'emotion': 'fear'}", "fear"),
        ('```json\n{"label": "sadness"}\n```', "sadness"),
        ("The emotion is surprise.", "surprise"),
        ("joy or sadness, hard to say", None),
        ('{"emotion": "boredom"}', None),
        ("", None),
    ],
)
def test_zero_shot_answers_are_parsed_tolerantly(answer, expected):
    assert parse_emotion(answer, ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]) == expected


def test_zero_shot_accuracy_is_over_valid_answers_with_coverage():
    result = score_answers(["joy", None, "anger", "fear"], ["joy", "joy", "fear", "fear"])
    assert result.accuracy == pytest.approx(2 / 3) and result.coverage == pytest.approx(0.75)


@pytest.fixture(scope="module")
def chat_decoder(tokenizer):
    chat_tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    chat_tokenizer.chat_template = CHAT_TEMPLATE
    chat_tokenizer.eos_token = "[SEP]"
    return tiny_decoder("qwen3", tokenizer.vocab_size), chat_tokenizer


def test_reply_states_are_the_states_of_the_reply_tokens_in_context(chat_decoder):
    from affectlab.probing import generate_replies, reply_states

    model, chat_tokenizer = chat_decoder
    replies = generate_replies(model, chat_tokenizer, TEXTS[:3], max_new_tokens=6)
    calm = generate_replies(model, chat_tokenizer, TEXTS[:3], system_prompt="You always remain calm and composed.",
                            max_new_tokens=6)
    assert all(c > p for c, p in zip(calm.prompt_lengths, replies.prompt_lengths))  # the system turn is in
    states = reply_states(HiddenStateExtractor(model, chat_tokenizer, [2]), replies)
    for ids, start, reply in zip(replies.ids, replies.prompt_lengths, states):
        assert 0 < len(reply) <= 6 and len(reply) == len(ids) - start
        with torch.no_grad():
            expected = model(input_ids=ids[None], output_hidden_states=True).hidden_states[2][0, start:]
        torch.testing.assert_close(reply, expected, atol=1e-4, rtol=1e-4)


def test_offset_probe_reads_each_position_and_counts_the_replies_reaching_it():
    from affectlab.probing import OffsetProbe, accuracy_by_offset, fit_offset_probe

    torch.manual_seed(0)
    centres = torch.randn(7, 16) * 4
    labels = torch.randint(0, 7, (300,))
    lengths = torch.randint(5, 60, (300,))
    states = [centres[y] + torch.randn(int(n), 16) for y, n in zip(labels, lengths)]
    probe = OffsetProbe(16, 7, max_offset=64, width=32)
    losses = fit_offset_probe(probe, states[:250], labels[:250], per_reply=8, epochs=2, lr=3e-3)
    assert losses[-1] < losses[0]
    curve = accuracy_by_offset(probe, states[250:], labels[250:], [0, 10, 40, 100])
    assert curve[0][1] == 50 and curve[100] == (pytest.approx(float("nan"), nan_ok=True), 0)
    assert curve[0][0] > 0.8 and curve[40][1] < 50


def test_malleability_gives_per_class_recall_and_precision_per_system_prompt(chat_decoder):
    from affectlab.probing import SYSTEM_PROMPTS, agreement, malleability

    exact = agreement([0, 0, 1, None], [0, 1, 1, 2], num_classes=3)
    assert exact.recall == [1.0, 0.5, 0.0] and exact.precision[:2] == [0.5, 1.0] and exact.judged == 3
    model, chat_tokenizer = chat_decoder

    def always_joy(replies):  # a judge that ignores the reply
        return [3] * len(replies)

    results = malleability(model, chat_tokenizer, TEXTS[:3], [3, 0, 3], always_joy, 7, max_new_tokens=3)
    assert set(results) == set(SYSTEM_PROMPTS)
    for result in results.values():
        assert result.recall[3] == 1.0 and result.recall[0] == 0.0 and result.precision[3] == pytest.approx(2 / 3)


def test_a_text_classifier_judges_replies_through_its_own_label_names(tmp_path: Path, tokenizer):
    from transformers import BertConfig, BertForSequenceClassification

    from affectlab.datasets.emotion_corpus import EMOTIONS
    from affectlab.probing import classifier_judge
    from affectlab.probing.malleability import classifier_class_map

    labels = {0: "anger", 1: "Joy", 2: "happiness", 3: "neutral"}  # two of its labels are one class of ours
    assert classifier_class_map(labels, EMOTIONS) == [0, 3, 3, 6]
    with pytest.raises(ValueError, match="'boredom' \\(id 1\\) names none of"):
        classifier_class_map({0: "anger", 1: "boredom"}, EMOTIONS, "my/classifier")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, num_labels=4, id2label=labels, label2id={v: k for k, v in labels.items()})
    model = BertForSequenceClassification(config).eval()
    judged = classifier_judge(model, tokenizer, EMOTIONS, batch_size=2)(TEXTS)
    with torch.no_grad():
        probs = model(**tokenizer(TEXTS, padding=True, return_tensors="pt")).logits.softmax(-1)
    expected = torch.stack([probs[:, 0], probs[:, 1] + probs[:, 2], probs[:, 3]], dim=1).argmax(-1)
    assert judged == [[0, 3, 6][i] for i in expected.tolist()]


def test_the_depth_figure_adds_earlier_runs_of_other_models_on_the_same_corpus(tmp_path: Path):
    from mlflow import MlflowClient
    from omegaconf import OmegaConf

    from affectlab.lab.config import flatten
    from affectlab.lab.probing.evaluation import earlier_depth_curves

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("probing", artifact_location=str(tmp_path / "artifacts"))
    cfg = OmegaConf.create({"model": {"name": "this-model"}, "data": {"source": "meld", "max_per_class": None}})

    def past_run(model: str, source: str, accuracies: list[float], num_layers: int) -> None:
        run = client.create_run(experiment).info.run_id
        for key, value in flatten({"model": {"name": model}, "data": {"source": source, "max_per_class": None}}).items():
            client.log_param(run, key, value)
        client.log_metric(run, "num_layers", num_layers)
        for layer, accuracy in zip(range(0, num_layers + 1, num_layers // 2), accuracies):
            client.log_metric(run, f"test/accuracy/layer_{layer:02d}", accuracy)
        client.set_terminated(run)

    past_run("qwen", "meld", [0.1, 0.5, 0.6], num_layers=28)
    past_run("llama", "meld", [0.2, 0.4, 0.5], num_layers=16)
    past_run("llama", "meld", [0.2, 0.45, 0.55], num_layers=16)  # the latest run of a model stands for it
    past_run("qwen-other-corpus", "goemotions.csv", [0.1, 0.2, 0.3], num_layers=28)
    past_run("this-model", "meld", [0.9, 0.9, 0.9], num_layers=6)  # the current model's line is the current run
    curves = earlier_depth_curves(client, experiment, run_id="none", cfg=cfg)["accuracy"]
    assert set(curves) == {"qwen", "llama"}
    assert curves["llama"] == ([0.0, 0.5, 1.0], [0.2, 0.45, 0.55])
