"""The visual modality predictors: zero-shot CLIP label matching (by hand, with a fake CLIP) and the face models."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from affectlab.models.clip import create_clip
from affectlab.models.errors import ModelError
from affectlab.datasets.labelsets import load_label_set
from affectlab.models.face_expression import StaticFaceExpression, TemporalEmotionHead
from affectlab.models.zero_shot import ZeroShotClip

CEXPR = load_label_set("cexpr")
BASIC_WORDS, COMPOUND_WORDS = CEXPR.basis.words, CEXPR.words[:7]  # the label sets' caption words


class FakeClip(nn.Module):
    """Text i embeds as the unit vector e_i; an image's pixels are its embedding."""

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.eye(15)[tokens]

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1)


def test_zero_shot_softmaxes_over_all_words_then_renormalises_basic_and_compound():
    model = ZeroShotClip(FakeClip(), lambda texts: torch.arange(len(texts)), BASIC_WORDS, COMPOUND_WORDS, logit_scale=1.0)
    happy, fearfully_surprised = torch.eye(15)[BASIC_WORDS.index("happy")], torch.eye(15)[8]
    frames = torch.stack([happy, fearfully_surprised]).view(1, 2, 3, 1, 5)
    basic, compound = model(frames)
    # per frame: e / (e + 14) on its word, 1 / (e + 14) elsewhere; the two-frame mean is (e + 1) / 2(e + 14) on
    # "happy" and on "fearfully surprised", 1 / (e + 14) elsewhere; renormalised within the 8 and within the 7
    e = math.e
    assert basic[0, 4].item() == pytest.approx((e + 1) / (e + 15))
    assert basic[0, 0].item() == pytest.approx(2 / (e + 15))
    assert compound[0, 0].item() == pytest.approx((e + 1) / (e + 13))
    assert compound[0, 6].item() == pytest.approx(2 / (e + 13))
    assert len(COMPOUND_WORDS) == 7


def test_modality_predictors_map_frames_to_eight_probabilities():
    torch.manual_seed(0)
    clip = create_clip("affectlab-tiny")
    frames = torch.randn(2, 3, 3, clip.image_size, clip.image_size)
    basic, compound = ZeroShotClip(clip.model, clip.tokenizer, BASIC_WORDS, COMPOUND_WORDS)(frames)
    assert basic.shape == (2, 8) and compound.shape == (2, 7)
    static = StaticFaceExpression(8, "test_resnet")(frames)
    embeddings = clip.model.encode_image(frames.flatten(0, 1)).view(2, 3, -1)
    dynamic = TemporalEmotionHead(embeddings.shape[-1], 3, 8, heads=2)(embeddings)
    for probs in (basic, compound, static, dynamic):
        torch.testing.assert_close(probs.sum(dim=-1), torch.ones(2))
    assert static.shape == dynamic.shape == (2, 8)


def test_a_segment_must_be_a_batch_of_frame_sequences():
    with pytest.raises(ModelError, match=r"expected \[B, T, 3, H, W\]"):
        StaticFaceExpression(8, "test_resnet")(torch.randn(2, 3, 32, 32))
