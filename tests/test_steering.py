"""Steering a causal LM along a direction: the hook shifts exactly the chosen layer's hidden states and is gone after
the ``with`` block (error or not); the zero-shot answer's distribution over the emotion words is read from the
first token of each; and steering along an emotion word's unembedding row raises that emotion's share with alpha.
Tiny randomly initialised LLaMA and Qwen3 decoders with a word-level tokenizer built here: the mechanics, not the
science (that needs real weights: see the docstring of affectlab.probing.steering)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from builders import CHAT_TEMPLATE, tiny_decoder
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from affectlab.lab.config import load_config
from affectlab.lab.probing.studies import steering_study
from affectlab.probing import (
    ANSWER_PREFIX,
    SteeringError,
    answer_prompt,
    answer_tokens,
    emotion_answers,
    find_blocks,
    steering,
    steering_sweep,
)

EMOTIONS = ["anger", "disgust", "fear", "joy", "sadness", "surprise", "neutral"]
TEXTS = ["I am so happy today", "we lost the game again", "the train is late"]
WORDS = ("[PAD] [UNK] [EOS] classify the emotion expressed in text below as exactly one of : , . answer only with a "
         'json object such { } {" ": " "}. < | > user assistant I am so happy today we lost game again train is late')


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one thread is faster (conftest)


@pytest.fixture(scope="module")
def tokenizer():
    vocab = {word: index for index, word in enumerate(dict.fromkeys(WORDS.split() + EMOTIONS))}
    model = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    model.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=model, unk_token="[UNK]", pad_token="[PAD]", eos_token="[EOS]")


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def decoder(request, tokenizer):
    return tiny_decoder(request.param, len(tokenizer), layers=4)


def hidden_states(model, ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with torch.no_grad():
        return model(input_ids=ids, output_hidden_states=True).hidden_states


def hooks(model) -> list[list[int]]:
    """The ids of every block's hooks (transformers adds its own, to record hidden states)."""
    return [[*block._forward_hooks, *block._forward_pre_hooks] for block in find_blocks(model)]


def test_steering_shifts_exactly_the_chosen_layers_hidden_states(decoder, tokenizer):
    ids = tokenizer(TEXTS[0], return_tensors="pt")["input_ids"]
    direction = torch.randn(64, generator=torch.Generator().manual_seed(0))
    before, hooks_before = hidden_states(decoder, ids), hooks(decoder)
    with steering(decoder, 2, direction, alpha=3.0):
        steered = hidden_states(decoder, ids)
    torch.testing.assert_close(steered[0], before[0])
    torch.testing.assert_close(steered[1], before[1])  # below the layer: untouched
    torch.testing.assert_close(steered[2], before[2] + 3.0 * direction)  # the layer: shifted at every token
    assert not torch.allclose(steered[3], before[3] + 3.0 * direction, atol=1e-3)  # above: the blocks react
    assert hooks(decoder) == hooks_before
    for after, first in zip(hidden_states(decoder, ids), before):
        torch.testing.assert_close(after, first)


def test_steering_the_embeddings_is_shifting_the_input_embeddings(decoder, tokenizer):
    ids = tokenizer(TEXTS[1], return_tensors="pt")["input_ids"]
    direction = torch.randn(64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with steering(decoder, 0, direction, alpha=0.5):
            steered = decoder(input_ids=ids).logits
        shifted = decoder(inputs_embeds=decoder.get_input_embeddings()(ids) + 0.5 * direction).logits
    torch.testing.assert_close(steered, shifted)


def test_the_hook_is_removed_even_when_the_forward_pass_fails(decoder, tokenizer):
    ids = tokenizer(TEXTS[2], return_tensors="pt")["input_ids"]
    before, hooks_before = hidden_states(decoder, ids)[-1], hooks(decoder)
    with pytest.raises(RuntimeError, match="out of memory, say"), steering(decoder, 4, torch.ones(64), alpha=10.0):
        raise RuntimeError("out of memory, say")
    assert hooks(decoder) == hooks_before
    torch.testing.assert_close(hidden_states(decoder, ids)[-1], before)


def test_the_answer_distribution_is_each_emotions_first_token_after_the_answer_prefix(decoder, tokenizer):
    answers = emotion_answers(decoder, tokenizer, TEXTS, EMOTIONS)
    prompt = answer_prompt(tokenizer, TEXTS[0], EMOTIONS)
    assert prompt.endswith("Text: I am so happy today\n\n" + ANSWER_PREFIX)
    ids = tokenizer(prompt, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        next_token = decoder(input_ids=ids).logits[0, -1].softmax(-1)
    expected = next_token[tokenizer.convert_tokens_to_ids(EMOTIONS)]
    torch.testing.assert_close(answers.mass[0], expected.sum())
    torch.testing.assert_close(answers.distribution[0], expected / expected.sum())
    torch.testing.assert_close(answers.distribution.sum(1), torch.ones(len(TEXTS)))


def test_a_chat_model_is_asked_in_its_chat_template(tokenizer):
    chat = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                   eos_token="[EOS]", chat_template=CHAT_TEMPLATE)
    prompt = answer_prompt(chat, "the train is late", EMOTIONS)
    assert prompt.startswith("<|user|> Classify") and prompt.endswith("<|assistant|>" + ANSWER_PREFIX)
    context, token = answer_tokens(chat, prompt, EMOTIONS)[3]
    assert chat.convert_ids_to_tokens(token) == "joy" and list(context) == chat(prompt, add_special_tokens=False)[
        "input_ids"]


def test_emotions_whose_answers_start_alike_are_refused(tokenizer):
    prompt = answer_prompt(tokenizer, TEXTS[0], ["joy", "boredom", "ennui"])  # both unknown words: [UNK]
    with pytest.raises(SteeringError, match="classes 'boredom' and 'ennui' start with the same token"):
        answer_tokens(tokenizer, prompt, ["joy", "boredom", "ennui"])


@pytest.mark.parametrize("emotion", ["joy", "fear"])
def test_steering_along_an_emotions_unembedding_raises_its_share_with_alpha(decoder, tokenizer, emotion):
    column = EMOTIONS.index(emotion)
    direction = decoder.get_output_embeddings().weight[tokenizer.convert_tokens_to_ids(emotion)].detach()
    alphas = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]
    hooks_before = hooks(decoder)
    sweep = steering_sweep(decoder, tokenizer, TEXTS, EMOTIONS, 4, direction, alphas)
    unsteered = emotion_answers(decoder, tokenizer, TEXTS, EMOTIONS)
    torch.testing.assert_close(sweep.distribution[0], unsteered.distribution)  # alpha 0 is the model as it is
    share = sweep.distribution[:, :, column]  # [alphas, texts]
    assert (share[1:] > share[:-1]).all(), share.T
    assert (share[-1] > 1.5 * share[0]).all() and (share[-1] > sweep.distribution[-1].max(1).values - 1e-6).all()
    assert hooks(decoder) == hooks_before


def test_a_direction_that_does_not_fit_the_model_is_refused(decoder):
    with pytest.raises(SteeringError, match=r"direction of shape \(32,\): expected \[64\]"), \
            steering(decoder, 1, torch.zeros(32)):
        pass
    with pytest.raises(SteeringError, match="layer=5: the model has layers 0..4"), steering(decoder, 5, torch.zeros(64)):
        pass


def test_the_steered_layer_is_the_one_model_layers_would_pick_for_the_same_fraction(tokenizer, tmp_path: Path):
    model = tiny_decoder("llama", len(tokenizer), layers=6)
    cfg = load_config("probing", ["steering.layer=0.75", "steering.alphas=[0.0]", "steering.max_texts=1"])
    directions = torch.zeros(7, len(EMOTIONS), model.config.hidden_size)
    metrics, _ = steering_study(cfg, (model, tokenizer), directions, list(range(7)), 6, EMOTIONS, TEXTS, tmp_path)
    assert metrics["steering/layer"] == 5  # 0.75 x 6 = 4.5, halves rounded up as model.layers=[0.75] does
