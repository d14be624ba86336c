"""MHPF's loss and initialisation against the authors' code (ProbabilityFusion_v6 and WeightedCrossEntropyLoss of
the 9th ABAW zero-shot compound expression entry), on fixed numbers written here.

Their model, rewritten plainly below as `AuthorsFusion`: W = torch.rand(heads, modalities, classes), then
g = torch.rand(heads); P = sum_h softmax(g)_h sum_m softmax_m(W)[h, m] * p_m, with p_m given as a list of [B, C]
tensors. Their loss: F.cross_entropy(P, y, weight=w), P taken as logits, torch's weighted mean over the batch.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from affectlab.fusion.mhpf import (
    MHPF_INITS,
    MHPF_LOSSES,
    InputDependentMHPF,
    MhpfBank,
    MhpfError,
    MultiHeadProbabilityFusion,
    create_mhpf,
    mhpf_loss,
)


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one thread is faster (conftest)


# 3 segments x 3 modalities x 8 classes; each row sums to 1
PROBS = torch.tensor([
    [[0.05, 0.10, 0.05, 0.40, 0.10, 0.10, 0.10, 0.10],
     [0.20, 0.05, 0.05, 0.30, 0.05, 0.15, 0.10, 0.10],
     [0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125, 0.125]],
    [[0.60, 0.05, 0.05, 0.05, 0.05, 0.10, 0.05, 0.05],
     [0.10, 0.30, 0.10, 0.10, 0.10, 0.10, 0.10, 0.10],
     [0.35, 0.05, 0.20, 0.05, 0.05, 0.10, 0.10, 0.10]],
    [[0.10, 0.10, 0.10, 0.10, 0.10, 0.30, 0.10, 0.10],
     [0.05, 0.05, 0.05, 0.05, 0.05, 0.65, 0.05, 0.05],
     [0.02, 0.18, 0.10, 0.10, 0.30, 0.10, 0.10, 0.10]],
])
TARGET = torch.tensor([3, 0, 5])
CLASS_WEIGHTS = torch.tensor([0.5, 1.0, 2.0, 1.5, 0.8, 1.25, 0.0, 3.0])
SEED = 7


class AuthorsFusion(torch.nn.Module):
    """ProbabilityFusion_v6 written plainly: the same parameters, draws and arithmetic, modalities as a list."""

    def __init__(self, num_matrices: int, num_classes: int, num_heads: int):
        super().__init__()
        self.head_weights = torch.nn.Parameter(torch.rand(num_heads, num_matrices, num_classes))
        self.head_combine = torch.nn.Parameter(torch.rand(num_heads))

    def forward(self, pred: list[torch.Tensor]) -> torch.Tensor:
        per_modality = torch.softmax(self.head_weights, dim=1)
        mix = torch.softmax(self.head_combine, dim=0)
        out = 0
        for h in range(len(mix)):
            head = sum(p * per_modality[h, m] for m, p in enumerate(pred))
            out = out + mix[h] * head
        return out


def authors_loss_by_hand(fused: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """-log softmax(P_b)[y_b] = logsumexp(P_b) - P_b[y_b], weighted by w[y_b], divided by the sum of those weights."""
    per_row = torch.logsumexp(fused, dim=-1) - fused[torch.arange(len(target)), target]
    w = weights[target]
    return (w * per_row).sum() / w.sum()


def _seeded_pair(seed: int = SEED) -> tuple[MultiHeadProbabilityFusion, AuthorsFusion]:
    torch.manual_seed(seed)
    ours = MultiHeadProbabilityFusion(num_modalities=3, num_classes=8, num_heads=3, init="authors")
    torch.manual_seed(seed)
    theirs = AuthorsFusion(num_matrices=3, num_classes=8, num_heads=3)
    return ours, theirs


# --- initialisation ---------------------------------------------------------------------------------------------------


def test_authors_init_draws_torch_rand_weights_then_gate_under_a_seed():
    torch.manual_seed(SEED)
    weights, gate = torch.rand(3, 3, 8), torch.rand(3)
    ours, theirs = _seeded_pair()
    assert torch.equal(ours.weights, weights) and torch.equal(ours.gate, gate)
    assert torch.equal(theirs.head_weights, weights) and torch.equal(theirs.head_combine, gate)


def test_small_random_init_is_the_previous_default():
    torch.manual_seed(SEED)
    weights = torch.randn(3, 3, 8) * 0.01
    torch.manual_seed(SEED)
    fusion = MultiHeadProbabilityFusion(num_modalities=3)
    assert torch.equal(fusion.weights, weights) and torch.equal(fusion.gate, torch.zeros(3))


def test_create_mhpf_and_the_bank_pass_the_init_through():
    torch.manual_seed(SEED)
    draws = [(torch.rand(3, 4, 8), torch.rand(3)) for _ in range(2)]
    torch.manual_seed(SEED)
    lone = create_mhpf("static", 4, init="authors")
    assert torch.equal(lone.weights, draws[0][0]) and torch.equal(lone.gate, draws[0][1])
    torch.manual_seed(SEED)
    bank = MhpfBank("static", 4, [[0, 1], [0, 1, 2, 3]], init="authors")
    for k, (weights, gate) in enumerate(draws):  # net after net, W before g within each
        state = dict(zip(bank.names, bank.state_of(k)))
        assert torch.equal(state["weights"], weights) and torch.equal(state["gate"], gate)


def test_input_dependent_mhpf_keeps_linear_init_whatever_init_names():
    torch.manual_seed(SEED)
    authors = InputDependentMHPF(3, init="authors")
    torch.manual_seed(SEED)
    small = create_mhpf("input_dependent", 3, init="small_random")
    for a, b in zip(authors.parameters(), small.parameters(), strict=True):
        assert torch.equal(a, b)


def test_unknown_init_and_loss_name_the_valid_choices():
    with pytest.raises(MhpfError, match=r"fusion.init.*\['authors', 'small_random'\]"):
        MultiHeadProbabilityFusion(3, init="xavier")
    with pytest.raises(MhpfError, match=r"fusion.init"):
        create_mhpf("input_dependent", 3, init="rand")
    with pytest.raises(MhpfError, match=r"fusion.loss.*\['authors_ce', 'renormalised_nll'\]"):
        mhpf_loss(PROBS[:, 0], TARGET, kind="cross_entropy")
    assert sorted(MHPF_INITS) == ["authors", "small_random"]
    assert sorted(MHPF_LOSSES) == ["authors_ce", "renormalised_nll"]


# --- the loss ---------------------------------------------------------------------------------------------------------


def test_authors_loss_on_a_two_class_fusion_by_hand():
    # the hand MHPF of test_fusion.py fuses to P = (0.43, 0.675); target 1:
    # authors: -log(e^0.675 / (e^0.43 + e^0.675)) = log(1 + e^-0.245); renormalised: -log(0.675 / 1.105)
    fused = torch.tensor([[0.43, 0.675]])
    assert mhpf_loss(fused, torch.tensor([1]), kind="authors_ce").item() == pytest.approx(
        math.log(1 + math.exp(-0.245)), abs=1e-6)  # 0.578139
    assert mhpf_loss(fused, torch.tensor([1]), kind="renormalised_nll").item() == pytest.approx(
        -math.log(0.675 / 1.105), abs=1e-6)  # 0.492859


def test_authors_loss_is_weighted_cross_entropy_of_the_fused_output_as_logits():
    ours, theirs = _seeded_pair()
    fused = ours(PROBS)
    their_fused = theirs(list(PROBS.unbind(dim=1)))
    torch.testing.assert_close(fused, their_fused, rtol=0, atol=1e-7)
    loss = mhpf_loss(fused, TARGET, CLASS_WEIGHTS, kind="authors_ce")
    torch.testing.assert_close(loss, authors_loss_by_hand(their_fused, TARGET, CLASS_WEIGHTS))
    torch.testing.assert_close(loss, F.cross_entropy(their_fused, TARGET, weight=CLASS_WEIGHTS))  # their call
    # the other loss is really another one on this input (so the checks above can tell them apart)
    other = mhpf_loss(fused, TARGET, CLASS_WEIGHTS, kind="renormalised_nll")
    assert abs(other.item() - loss.item()) > 0.1


def test_authors_loss_gradient_and_one_adam_step_match_their_model():
    ours, theirs = _seeded_pair()
    lr = 1e-4  # the published learning rate
    ours_opt = torch.optim.Adam(ours.parameters(), lr=lr)
    theirs_opt = torch.optim.Adam(theirs.parameters(), lr=lr)
    before = ours.weights.detach().clone(), ours.gate.detach().clone()

    mhpf_loss(ours(PROBS), TARGET, CLASS_WEIGHTS, kind="authors_ce").backward()
    F.cross_entropy(theirs(list(PROBS.unbind(dim=1))), TARGET, weight=CLASS_WEIGHTS).backward()
    torch.testing.assert_close(ours.weights.grad, theirs.head_weights.grad, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(ours.gate.grad, theirs.head_combine.grad, rtol=1e-5, atol=1e-8)

    # Adam's first step by hand: m = (1 - b1) g, v = (1 - b2) g^2, bias-corrected to g and g^2,
    # so theta -= lr * g / (|g| + eps)
    eps = 1e-8
    expected = [value - lr * grad / (grad.abs() + eps)
                for value, grad in zip(before, (ours.weights.grad, ours.gate.grad))]
    ours_opt.step()
    theirs_opt.step()
    torch.testing.assert_close(ours.weights.detach(), expected[0], rtol=0, atol=1e-7)
    torch.testing.assert_close(ours.gate.detach(), expected[1], rtol=0, atol=1e-7)
    torch.testing.assert_close(ours.weights.detach(), theirs.head_weights.detach(), rtol=0, atol=1e-7)
    torch.testing.assert_close(ours.gate.detach(), theirs.head_combine.detach(), rtol=0, atol=1e-7)


def test_authors_loss_follows_their_model_over_several_adam_steps():
    ours, theirs = _seeded_pair()
    ours_opt = torch.optim.Adam(ours.parameters(), lr=1e-2)
    theirs_opt = torch.optim.Adam(theirs.parameters(), lr=1e-2)
    for _ in range(5):
        for opt in (ours_opt, theirs_opt):
            opt.zero_grad()
        mhpf_loss(ours(PROBS), TARGET, CLASS_WEIGHTS, kind="authors_ce").backward()
        F.cross_entropy(theirs(list(PROBS.unbind(dim=1))), TARGET, weight=CLASS_WEIGHTS).backward()
        ours_opt.step()
        theirs_opt.step()
    torch.testing.assert_close(ours.weights.detach(), theirs.head_weights.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.gate.detach(), theirs.head_combine.detach(), rtol=0, atol=1e-6)


def test_the_two_losses_pull_differently_and_the_authors_one_weakly():
    """The figures renormalised_nll's docstring quotes: the gradients' sizes on this input."""
    grads = {}
    for kind in MHPF_LOSSES:
        ours, _ = _seeded_pair()
        mhpf_loss(ours(PROBS), TARGET, CLASS_WEIGHTS, kind=kind).backward()
        grads[kind] = torch.cat([ours.weights.grad.flatten(), ours.gate.grad])
    assert grads["authors_ce"].norm().item() == pytest.approx(3.04e-2, abs=1e-4)
    assert grads["renormalised_nll"].norm().item() == pytest.approx(7.94e-2, abs=1e-4)  # 2.6x
    assert (grads["renormalised_nll"] - grads["authors_ce"]).abs().max().item() == pytest.approx(0.0174, abs=1e-4)


def test_at_the_uniform_output_the_authors_loss_pulls_8x_weaker():
    # dL/dP: authors softmax(P) - onehot = 1/8 - [c = y], norm sqrt(56) / 8;
    # renormalised 1 / sum(P) - [c = y] / P[y] = 1 - 8 [c = y], norm sqrt(56)
    norms = {}
    for kind in MHPF_LOSSES:
        fused = torch.full((1, 8), 1 / 8, requires_grad=True)
        mhpf_loss(fused, torch.tensor([2]), kind=kind).backward()
        norms[kind] = fused.grad.norm().item()
    assert norms["authors_ce"] == pytest.approx(math.sqrt(56) / 8, rel=1e-5)
    assert norms["renormalised_nll"] == pytest.approx(math.sqrt(56), rel=1e-5)


SUBSETS = [[0, 1], [0, 1, 2], [2]]
BANK_WEIGHTS = torch.stack([CLASS_WEIGHTS, torch.ones(8), CLASS_WEIGHTS.flip(0)])


def test_bank_authors_loss_is_the_sum_of_each_nets_own_loss():
    torch.manual_seed(SEED)
    bank = MhpfBank("static", 3, SUBSETS, init="authors")
    present = torch.tensor([[True, True, True], [True, True, False], [False, False, True]])
    fused, valid = bank(PROBS, present)
    assert valid.tolist() == [[True, True, False], [True, True, True], [True, False, True]]
    expected = sum(
        F.cross_entropy(fused[k][valid[k]], TARGET[valid[k]], weight=BANK_WEIGHTS[k]) for k in range(len(SUBSETS))
    )
    torch.testing.assert_close(mhpf_loss(fused, TARGET, BANK_WEIGHTS, valid, kind="authors_ce"), expected)


def test_bank_net_learns_as_their_model_on_its_modality_combination():
    torch.manual_seed(SEED)
    bank = MhpfBank("static", 3, SUBSETS, init="authors")
    fused, valid = bank(PROBS, torch.ones(3, 3, dtype=torch.bool))
    mhpf_loss(fused, TARGET, BANK_WEIGHTS, valid, kind="authors_ce").backward()
    for k, subset in enumerate(SUBSETS):
        # their model built for this combination alone: num_matrices = len(subset), W restricted to its modalities
        theirs = AuthorsFusion(len(subset), 8, 3)
        state = dict(zip(bank.names, bank.state_of(k)))
        with torch.no_grad():
            theirs.head_weights.copy_(state["weights"][:, subset])
            theirs.head_combine.copy_(state["gate"])
        F.cross_entropy(theirs([PROBS[:, m] for m in subset]), TARGET, weight=BANK_WEIGHTS[k]).backward()
        grads = dict(zip(bank.names, (param.grad[k] for param in bank.params)))
        torch.testing.assert_close(grads["weights"][:, subset], theirs.head_weights.grad, rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(grads["gate"], theirs.head_combine.grad, rtol=1e-5, atol=1e-8)
        others = [m for m in range(3) if m not in subset]
        assert not grads["weights"][:, others].any()  # the modalities it does not fuse get no gradient


def test_authors_loss_and_init_learn_to_trust_the_informative_modality():
    """Weak gradients or not, Adam scales each parameter's step: at the paper setting MHPF finds the one informative
    modality among two noise ones and scores as well as it alone (majority class: 0.16; logistic regression on the
    24 probabilities, 4-fold cross-validated: 0.36)."""
    torch.manual_seed(0)
    labels = torch.randint(0, 8, (512,))
    informative = torch.softmax(F.one_hot(labels, 8).float() + torch.randn(512, 8), -1)
    noise = torch.softmax(torch.randn(512, 8), -1)
    probs = torch.stack([noise, informative, noise.flip(0)], dim=1)
    fusion = create_mhpf("static", 3, init="authors")
    optimizer = torch.optim.Adam(fusion.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        mhpf_loss(fusion(probs), labels, kind="authors_ce").backward()
        optimizer.step()
    assert (fusion.effective_weights(probs[:1])[0, 1] > 0.9).all()
    accuracy = (fusion(probs).argmax(-1) == labels).float().mean()
    alone = (informative.argmax(-1) == labels).float().mean()  # 0.373
    majority = (labels == labels.mode().values).float().mean()  # 0.162
    assert accuracy >= alone - 0.01 and accuracy > majority + 0.15
