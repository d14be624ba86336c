"""The face models of the C-EXPR-DB experiment: cross-fitted training on the basic windows, then their tables."""

from __future__ import annotations

import numpy as np
import torch
from omegaconf import OmegaConf

from affectlab.lab.cexpr.data import WindowedVideo
from affectlab.lab.cexpr.modalities import cross_fitted, video_folds
from affectlab.models.face_expression import TemporalEmotionHead


def _video(name: str, windows: int) -> WindowedVideo:
    return WindowedVideo(name, None, windows * 10, np.array([[10 * k, 10 * k + 10] for k in range(windows)]),
                         np.zeros(windows * 10, dtype=np.int64))


def test_video_folds_keep_a_video_whole_and_deal_videos_evenly():
    videos = [_video(f"v{i}", windows=i + 1) for i in range(6)]
    folds = video_folds(videos, 2, seed=0)
    start = 0
    for video in videos:  # a video's windows overlap: they must never be split between folds
        assert len(set(folds[start : start + len(video.windows)])) == 1
        start += len(video.windows)
    assert sorted(folds[np.cumsum([0] + [len(v.windows) for v in videos[:-1]])].tolist()) == [0, 0, 0, 1, 1, 1]


def test_cross_fitted_temporal_head_learns_held_out_windows(tmp_path):
    """Embeddings that carry their label: every held-out basic window is predicted by a model that never saw its
    video, and still right; the compound windows get the fold models' mean."""
    torch.manual_seed(0)
    generator = np.random.default_rng(0)
    labels = torch.as_tensor(generator.integers(0, 7, 120))
    embeddings = torch.randn(120, 4, 16) * 0.3
    embeddings[torch.arange(120), :, labels] += 2.0
    compound = torch.randn(5, 4, 16) * 0.3
    folds = np.repeat(np.arange(12) % 2, 10)  # 12 videos of 10 windows
    spec = OmegaConf.create({"epochs": 30, "lr": 3e-3, "batch_size": 16})
    out, _ = cross_fitted(lambda: TemporalEmotionHead(16, 4, 8, depth=1, heads=2),
                       {"affwild2": embeddings, "cexpr": compound}, {"affwild2": labels, "cexpr": torch.zeros(5)},
                       {"affwild2": folds}, 2, spec, batch_size=32, folder=tmp_path, seed=0)
    accuracy = (out["affwild2"].argmax(axis=1) == labels.numpy()).mean()
    assert accuracy > 0.9, accuracy
    np.testing.assert_allclose(out["cexpr"].sum(axis=1), 1.0, rtol=1e-5)
