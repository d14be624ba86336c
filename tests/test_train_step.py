"""The training step's shortcuts change nothing: the text encoder cut after the last EOS, class features kept while
no gradient reaches them, frame embeddings given instead of frames."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from affectlab.models import ClipCaer, create_clip

CLASSES = ["a neutral student", "a confused student with furrowed brows and a hand on the chin", "a tired student"]
B, T, SIZE = 2, 3, 48


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one thread is faster (conftest)


@pytest.fixture
def net() -> ClipCaer:
    torch.manual_seed(0)
    clip = create_clip("affectlab-tiny")
    return ClipCaer(clip.model, clip.tokenizer, CLASSES, num_frames=T)


def test_text_encoder_reads_up_to_the_longest_prompts_eos_and_gives_the_full_length_features(net):
    tokens = net.prompt_learner.tokens
    assert net.text_positions() == int(tokens.argmax(dim=-1).max()) + 1 < tokens.shape[1]
    full = F.normalize(net.text_encoder(net.prompt_learner(), tokens), dim=-1)
    torch.testing.assert_close(net.encode_text(), full, rtol=0, atol=1e-6)


def test_gradient_through_the_cut_prompts_is_the_full_lengths(net):
    grads = []
    for cut in (True, False):
        net.zero_grad()
        text = net.encode_text() if cut else F.normalize(net.text_encoder(net.prompt_learner(),
                                                                          net.prompt_learner.tokens), dim=-1)
        text.pow(3).sum().backward()
        grads.append(net.prompt_learner.ctx.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], rtol=0, atol=1e-6)


def test_class_features_are_kept_without_grad_and_follow_an_optimiser_step(net):
    with torch.no_grad():
        first = net.encode_text()
        assert net.encode_text() is first  # nothing changed: not recomputed
    optimizer = torch.optim.SGD(net.prompt_learner.parameters(), lr=1.0)
    net.encode_text().sum().backward()  # with grad: computed every time, as training needs
    optimizer.step()
    with torch.no_grad():
        after = net.encode_text()
    assert after is not first and not torch.allclose(after, first)
    with torch.no_grad():
        fresh = net._encode_text()
    torch.testing.assert_close(after, fresh, rtol=0, atol=0)


def test_frame_embeddings_skip_the_encoder_and_give_the_same_logits(net):
    net.eval()
    face, context = torch.randn(2, B, T, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        from_frames = net(face=face, context=context)
        embedded = [net.image_encoder(clip.flatten(0, 1)).unflatten(0, (B, T)) for clip in (face, context)]
        from_embeddings = net(face=embedded[0], context=embedded[1])
    torch.testing.assert_close(from_embeddings, from_frames, rtol=0, atol=1e-5)
