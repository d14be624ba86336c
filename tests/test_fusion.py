"""MHPF, PPA, PFSA and the frame post-processing, against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from affectlab.datasets.labelsets import load_label_set
from affectlab.fusion import (
    InputDependentMHPF,
    MhpfBank,
    MultiHeadProbabilityFusion,
    class_prototypes,
    class_weights,
    create_mhpf,
    label_space_features,
    label_word_prototypes,
    mhpf_combine,
    mhpf_loss,
    pair_weights,
    pfsa_scores,
    ppa_scores,
    read_submission,
    score_frames,
    score_submission,
    segments_to_frames,
    submission_header,
    write_submission,
)

CEXPR = load_label_set("cexpr")  # C-EXPR-DB's compounds and their pairs of basic classes (the basic8 label set)
BASIC_EMOTIONS, COMPOUND_EXPRESSIONS, PAIRS = CEXPR.basis.classes, CEXPR.compounds, CEXPR.pair_index()
SUBMISSION_HEADER = submission_header(COMPOUND_EXPRESSIONS)

LN3, LN4 = math.log(3.0), math.log(4.0)


pytestmark = pytest.mark.usefixtures("one_thread")  # small tensors: one thread is faster (conftest)


def _hand_mhpf() -> MultiHeadProbabilityFusion:
    """2 heads, 2 modalities, 2 classes. Head 0: class 0 -> (1/2, 1/2), class 1 -> (3/4, 1/4).
    Head 1: class 0 -> (1/5, 4/5), class 1 -> (1/2, 1/2). Gate softmax(ln 3, 0) = (3/4, 1/4)."""
    fusion = MultiHeadProbabilityFusion(num_modalities=2, num_classes=2, num_heads=2)
    with torch.no_grad():
        fusion.weights.copy_(torch.tensor([[[0.0, LN3], [0.0, 0.0]], [[0.0, 0.0], [LN4, 0.0]]]))
        fusion.gate.copy_(torch.tensor([LN3, 0.0]))
    return fusion


P_MODALITIES = torch.tensor([[[0.2, 0.8], [0.6, 0.4]]])  # [batch 1, modality, class]


def test_mhpf_matches_the_published_formula_by_hand():
    # q_0 = (0.5*0.2 + 0.5*0.6, 0.75*0.8 + 0.25*0.4) = (0.40, 0.70)
    # q_1 = (0.2*0.2 + 0.8*0.6, 0.5*0.8 + 0.5*0.4)   = (0.52, 0.60)
    # P   = 0.75 q_0 + 0.25 q_1                       = (0.43, 0.675)
    fused = _hand_mhpf()(P_MODALITIES)
    torch.testing.assert_close(fused, torch.tensor([[0.43, 0.675]]))


def test_mhpf_modality_weights_are_gate_weighted_softmaxes():
    weights = _hand_mhpf().effective_weights(P_MODALITIES)[0]
    # class 0: 0.75*(0.5, 0.5) + 0.25*(0.2, 0.8) = (0.425, 0.575); class 1: 0.75*(0.75, 0.25) + 0.25*(0.5, 0.5)
    torch.testing.assert_close(weights, torch.tensor([[0.425, 0.6875], [0.575, 0.3125]]))


def test_mhpf_missing_modality_is_masked_and_weights_renormalise():
    fusion = _hand_mhpf()
    probs = torch.tensor([[[0.2, 0.8], [float("nan"), float("nan")]]])
    fused = fusion(probs, present=torch.tensor([[True, False]]))
    torch.testing.assert_close(fused, torch.tensor([[0.2, 0.8]]))  # the only modality left gets weight 1

    three = MultiHeadProbabilityFusion(num_modalities=3, num_classes=2, num_heads=3)
    with torch.no_grad():
        three.weights.zero_()
    probs = torch.tensor([[[0.2, 0.8], [0.6, 0.4], [1.0, 0.0]]])
    fused = three(probs, present=torch.tensor([[True, True, False]]))
    torch.testing.assert_close(fused, torch.tensor([[0.4, 0.6]]))  # (p_0 + p_1) / 2


def test_mhpf_refuses_a_segment_without_any_modality():
    with pytest.raises(ValueError, match="no modality present"):
        _hand_mhpf()(P_MODALITIES, present=torch.tensor([[False, False]]))


def test_input_dependent_mhpf_with_a_constant_mlp_equals_the_static_one():
    fusion = InputDependentMHPF(num_modalities=2, num_classes=2, num_heads=2, hidden=4)
    static = _hand_mhpf()
    last = fusion.mlp[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.cat([static.weights.flatten(), static.gate]))
    torch.testing.assert_close(fusion(P_MODALITIES), torch.tensor([[0.43, 0.675]]))


def test_input_dependent_mhpf_weights_change_with_the_input_and_ignore_missing_values():
    torch.manual_seed(0)
    fusion = InputDependentMHPF(num_modalities=3, num_classes=8, hidden=16)
    probs = torch.softmax(torch.randn(2, 3, 8), dim=-1)
    present = torch.tensor([[True, True, False], [True, True, False]])
    changed = probs.clone()
    changed[:, 2] = float("nan")  # the missing modality's values must not matter
    torch.testing.assert_close(fusion(probs, present), fusion(changed, present))
    ratio = fusion(probs) / mhpf_combine(probs, torch.zeros(3, 3, 8), torch.zeros(3))
    assert not torch.allclose(ratio[0], ratio[1])  # not a fixed weighting


def test_mhpf_learns_to_trust_the_informative_modality():
    torch.manual_seed(0)
    labels = torch.randint(0, 8, (512,))
    reliable = torch.softmax(3.0 * torch.nn.functional.one_hot(labels, 8).float() + torch.randn(512, 8), -1)
    noise = torch.softmax(torch.randn(512, 8), -1)
    probs = torch.stack([noise, reliable], dim=1)
    fusion = create_mhpf("static", num_modalities=2)
    optimizer = torch.optim.Adam(fusion.parameters(), lr=0.05)
    for _ in range(100):
        optimizer.zero_grad()
        mhpf_loss(fusion(probs), labels).backward()
        optimizer.step()
    assert (fusion.effective_weights(probs[:1])[0, 1] > 0.8).all()


def test_mhpf_loss_is_cross_entropy_of_the_renormalised_output():
    loss = mhpf_loss(torch.tensor([[0.43, 0.675]]), torch.tensor([1]))
    assert loss.item() == pytest.approx(-math.log(0.675 / 1.105))


def test_class_weights_are_inverse_frequency_and_zero_for_absent_classes():
    # counts (3, 1, 0): n / (classes present * n_c) = 4 / (2 * 3), 4 / (2 * 1), 0
    torch.testing.assert_close(class_weights([0, 0, 0, 1], 3), torch.tensor([2 / 3, 2.0, 0.0]))


def test_create_mhpf_names_the_valid_kinds():
    assert isinstance(create_mhpf("input_dependent", 4), InputDependentMHPF)
    with pytest.raises(ValueError, match="input_dependent"):
        create_mhpf("dynamic", 4)


# Neutral, Anger, Disgust, Fear, Happiness, Sadness, Surprise, Other
BASIC = np.array([0.05, 0.10, 0.05, 0.20, 0.05, 0.30, 0.15, 0.10])


def test_ppa_sums_pairs():
    # FS = Fear+Surprise, HS, SS, DS, AS, SF = Sadness+Fear, SA = Sadness+Anger
    np.testing.assert_allclose(ppa_scores(BASIC, PAIRS), [0.35, 0.20, 0.45, 0.20, 0.25, 0.50, 0.40])
    assert ppa_scores(BASIC, PAIRS).argmax() == COMPOUND_EXPRESSIONS.index("Sadly Fearful")


def test_ppa_ignores_neutral_and_other():
    more = BASIC.copy()
    more[[0, 7]] = [0.9, 0.9]
    np.testing.assert_allclose(ppa_scores(more, PAIRS), ppa_scores(BASIC, PAIRS))


def test_pair_weights_follow_how_many_compounds_share_an_emotion():
    # d = 7 - compounds containing e: Surprise 2, Sadness 4, Fear 5, Anger 5, Happiness 6, Disgust 6
    expected = [[5 / 7, 2 / 7], [6 / 8, 2 / 8], [4 / 6, 2 / 6], [6 / 8, 2 / 8], [5 / 7, 2 / 7], [4 / 9, 5 / 9],
                [4 / 9, 5 / 9]]
    np.testing.assert_allclose(pair_weights(PAIRS, 8), expected)
    np.testing.assert_allclose(
        ppa_scores(BASIC, PAIRS, weighted=True),
        [5 / 7 * 0.2 + 2 / 7 * 0.15, 0.75 * 0.05 + 0.25 * 0.15, 2 / 3 * 0.3 + 1 / 3 * 0.15, 0.75 * 0.05 + 0.25 * 0.15,
         5 / 7 * 0.1 + 2 / 7 * 0.15, 4 / 9 * 0.3 + 5 / 9 * 0.2, 4 / 9 * 0.3 + 5 / 9 * 0.1],
    )


def test_ppa_mask_zeroes_probabilities_below_one_seventh():
    # 0.15 >= 1/7 stays; 0.10 and 0.05 go
    np.testing.assert_allclose(ppa_scores(BASIC, PAIRS, mask=True), [0.35, 0.15, 0.45, 0.15, 0.15, 0.50, 0.30])


def test_ppa_works_on_any_leading_shape_and_checks_the_pairs():
    batch = np.stack([BASIC, np.roll(BASIC, 1)]).reshape(2, 1, 8)
    assert ppa_scores(batch, PAIRS).shape == (2, 1, 7)
    with pytest.raises(ValueError, match=r"expected \(i, j\) basic class indices in 0..5"):
        ppa_scores(np.ones(6) / 6, PAIRS)  # Surprise is class 6: these are not the eight basic classes


def test_pfsa_is_a_softmax_of_paired_cosine_similarities():
    prototypes = np.eye(8)
    feature = np.zeros(8)
    feature[[BASIC_EMOTIONS.index("Fear"), BASIC_EMOTIONS.index("Surprise")]] = 3.0  # scale must not matter
    # cos to Fear and to Surprise = 1/sqrt2; z = (sqrt2, 1/sqrt2 x5, 0) for (FS, HS, SS, DS, AS, SF, SA)
    r = 1 / math.sqrt(2)
    z = np.exp([2 * r, r, r, r, r, r, 0.0])
    np.testing.assert_allclose(pfsa_scores(feature, prototypes, PAIRS, temperature=1.0), z / z.sum())
    assert pfsa_scores(feature, prototypes, PAIRS).argmax() == COMPOUND_EXPRESSIONS.index("Fearfully Surprised")


def test_pfsa_with_label_word_prototypes_scores_through_the_words_gram_matrix():
    """f = sum_e p_e mu_e against the centred label words mu_e: with orthogonal words PFSA ranks compounds as PPA
    does, whatever part the words share; a word close to another lends it its probability."""
    probs = np.random.default_rng(0).dirichlet(np.ones(8), size=50)
    words = np.eye(8, 16) * 4.0
    words[:, 12] = 30.0  # a large part every word shares (the prompt template): it must not matter
    prototypes = label_word_prototypes(words)
    np.testing.assert_allclose(prototypes.sum(axis=0), 0.0, atol=1e-12)
    scores = pfsa_scores(label_space_features(probs, prototypes), prototypes, PAIRS)
    np.testing.assert_array_equal(scores.argmax(axis=1), ppa_scores(probs, PAIRS).argmax(axis=1))

    p = np.zeros(8)
    p[BASIC_EMOTIONS.index("Sadness")] = 0.5
    p[BASIC_EMOTIONS.index("Neutral")] = 0.5
    prototypes = label_word_prototypes(np.eye(8))
    assert pfsa_scores(label_space_features(p, prototypes), prototypes, PAIRS).argmax() == COMPOUND_EXPRESSIONS.index(
        "Sadly Surprised"  # Sadness ties three compounds; the first in C-EXPR-DB's order wins
    )
    close = np.eye(8)
    close[BASIC_EMOTIONS.index("Neutral")] = close[BASIC_EMOTIONS.index("Anger")]  # "neutral" means "angry" here
    prototypes = label_word_prototypes(close)
    assert pfsa_scores(label_space_features(p, prototypes), prototypes, PAIRS).argmax() == COMPOUND_EXPRESSIONS.index(
        "Sadly Angry"
    )
    with pytest.raises(ValueError, match=r"expected \(basic classes, D\)"):
        label_word_prototypes(np.ones(7))


def test_pfsa_prototypes_are_class_means():
    features = np.array([[1.0, 0.0], [3.0, 2.0], [0.0, 5.0]])
    prototypes = class_prototypes(features, np.array([1, 1, 6]), 8)
    np.testing.assert_allclose(prototypes[1], [2.0, 1.0])
    np.testing.assert_allclose(prototypes[6], [0.0, 5.0])
    assert np.isnan(prototypes[0]).all()  # no sample: NaN, and PFSA treats it as orthogonal
    assert np.isfinite(pfsa_scores(features, prototypes, PAIRS)).all()


def test_segment_scores_are_averaged_over_overlaps_and_gaps_take_the_previous_frame():
    frames = segments_to_frames([0, 2], [4, 6], np.array([[1.0, 0.0], [0.0, 1.0]]), num_frames=8)
    expected = [[1, 0], [1, 0], [0.5, 0.5], [0.5, 0.5], [0, 1], [0, 1], [0, 1], [0, 1]]
    np.testing.assert_allclose(frames, expected)


def test_leading_uncovered_frames_take_the_first_prediction():
    frames = segments_to_frames([2, 3], [4, 5], np.array([[0.2], [0.6]]), num_frames=6)
    np.testing.assert_allclose(frames[:, 0], [0.2, 0.2, 0.2, 0.4, 0.6, 0.6])


def test_segments_outside_the_video_are_refused():
    with pytest.raises(ValueError, match="segment 1 covers frames \\[3, 9\\)"):
        segments_to_frames([0, 3], [2, 9], np.ones((2, 7)), num_frames=8)


def test_submission_file_has_the_challenge_header_and_numbered_frames(tmp_path):
    path = write_submission(tmp_path / "sub.csv", {"12": np.array([0, 6, 3]), "7": np.array([1])}, COMPOUND_EXPRESSIONS)
    lines = path.read_text().splitlines()
    assert lines[0] == (
        "image_location,Fearfully_Surprised,Happily_Surprised,Sadly_Surprised,Disgustedly_Surprised,"
        "Angrily_Surprised,Sadly_Fearful,Sadly_Angry"
    )
    assert lines[0] == SUBMISSION_HEADER
    assert lines[1:] == ["12/00001.jpg,0", "12/00002.jpg,6", "12/00003.jpg,3", "7/00001.jpg,1"]
    back = read_submission(path, COMPOUND_EXPRESSIONS)
    np.testing.assert_array_equal(back["12"], [0, 6, 3])


def test_read_submission_names_the_bad_line(tmp_path):
    path = tmp_path / "sub.csv"
    path.write_text(SUBMISSION_HEADER + "\n12/00001.jpg,0\n12/00003.jpg,1\n")
    with pytest.raises(ValueError, match="sub.csv:3: frame 3 of '12'; expected frame 2"):
        read_submission(path, COMPOUND_EXPRESSIONS)
    path.write_text(SUBMISSION_HEADER + "\n12/00001.jpg,9\n")
    with pytest.raises(ValueError, match="sub.csv:2"):
        read_submission(path, COMPOUND_EXPRESSIONS)


def test_score_is_macro_f1_over_classes_present_skipping_other_and_unannotated():
    truth = np.array([0, 0, 1, 1, 2, 7, -1])
    preds = np.array([0, 1, 1, 1, 0, 3, 5])
    score = score_frames(preds, truth, COMPOUND_EXPRESSIONS)
    # class 0: tp 1, 2 true, 2 predicted -> 0.5; class 1: tp 2, 2 true, 3 predicted -> 0.8; class 2: 0
    assert score.macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert score.per_class_f1["Happily Surprised"] == pytest.approx(0.8)
    assert math.isnan(score.per_class_f1["Sadly Angry"])
    assert score.num_frames == 5


def test_score_submission_reads_the_file_and_checks_frame_counts(tmp_path):
    path = write_submission(tmp_path / "sub.csv", {"a": np.array([0, 1, 1]), "b": np.array([2])}, COMPOUND_EXPRESSIONS)
    score = score_submission(path, {"a": np.array([0, 1, 1]), "b": np.array([2])}, COMPOUND_EXPRESSIONS)
    assert score.macro_f1 == 1.0
    with pytest.raises(ValueError, match="'b' has 1 frames; expected 2"):
        score_submission(path, {"a": np.array([0, 1, 1]), "b": np.array([2, 2])}, COMPOUND_EXPRESSIONS)


@pytest.mark.parametrize("kind", ["static", "input_dependent"])
def test_bank_net_equals_a_lone_mhpf_on_its_subset(kind):
    torch.manual_seed(0)
    bank = MhpfBank(kind, 3, [[0, 1], [0, 1, 2]])
    probs = torch.softmax(torch.randn(6, 3, 8), dim=-1)
    present = torch.ones(6, 3, dtype=torch.bool)
    present[0, 2] = False
    present[1, :2] = False  # only modality 2: net 0 has nothing there
    fused, valid = bank(probs, present)
    assert valid.tolist() == [[True, False, True, True, True, True], [True] * 6]
    for k, subset in enumerate(([True, True, False], [True, True, True])):
        lone = create_mhpf(kind, 3)
        with torch.no_grad():
            for name, stacked in zip(bank.names, bank.params):
                lone.get_parameter(name).copy_(stacked[k])
        rows = valid[k]
        expected = lone(probs[rows], present[rows] & torch.tensor(subset))
        torch.testing.assert_close(fused[k][rows], expected)


def test_bank_loss_is_each_nets_weighted_cross_entropy_summed():
    fused = torch.softmax(torch.randn(2, 5, 8), dim=-1)
    target = torch.tensor([0, 3, 3, 7, 1])
    weights = torch.rand(2, 8) + 0.1
    valid = torch.tensor([[True, True, False, True, True], [True] * 5])
    expected = sum(
        torch.nn.functional.nll_loss(torch.log(fused[k][valid[k]]), target[valid[k]], weight=weights[k])
        for k in range(2)
    )
    torch.testing.assert_close(mhpf_loss(fused, target, weights, valid), expected)
