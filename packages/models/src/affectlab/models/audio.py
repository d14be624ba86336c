"""A fixed-length description of a speech waveform: log-mel energy statistics.

The feature model of the textualized-vs-feature-based comparison needs one vector per utterance for the audio
modality when the clips are at hand. Mean and standard deviation over time of log-mel energies (a 25 ms window,
10 ms hop, `n_mels` triangular filters on the mel scale) are the classic utterance-level prosody and timbre
description; a learned speech encoder can replace it through the same interface (waveform in, vector out).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _hz_to_mel(hz: Tensor | float) -> Tensor:
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def _mel_to_hz(mel: Tensor) -> Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_fft: int, sample_rate: int, n_mels: int, f_min: float = 0.0,
                   f_max: float | None = None) -> Tensor:
    """[n_fft // 2 + 1, n_mels] triangular filters, equally spaced on the mel scale from f_min to f_max (Nyquist)."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise ValueError(f"need 0 <= f_min < f_max <= sample_rate / 2; got f_min={f_min}, f_max={f_max}, "
                         f"sample_rate={sample_rate}")
    bins = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = _mel_to_hz(torch.linspace(float(_hz_to_mel(f_min)), float(_hz_to_mel(f_max)), n_mels + 2,
                                      dtype=torch.float64))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins[:, None] - lower) / (centre - lower)
    falling = (upper - bins[:, None]) / (upper - centre)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


def log_mel_statistics(waveform: Tensor, sample_rate: int, n_mels: int = 40, window_ms: float = 25.0,
                       hop_ms: float = 10.0) -> Tensor:
    """[2 * n_mels]: the mean and the standard deviation over time of the log-mel energies of a mono waveform [N].

    A waveform shorter than one window is zero-padded to one window (one frame, standard deviation 0).
    """
    waveform = torch.as_tensor(waveform, dtype=torch.float32).flatten()
    if waveform.numel() == 0:
        raise ValueError("the waveform is empty; expected at least one sample")
    if not torch.isfinite(waveform).all():
        raise ValueError("the waveform holds NaN or infinite samples")
    window = max(2, int(round(sample_rate * window_ms / 1000)))
    hop = max(1, int(round(sample_rate * hop_ms / 1000)))
    n_fft = 2 ** math.ceil(math.log2(window))
    if waveform.numel() < window:
        waveform = torch.nn.functional.pad(waveform, (0, window - waveform.numel()))
    spectrum = torch.stft(waveform, n_fft=n_fft, hop_length=hop, win_length=window,
                          window=torch.hann_window(window), center=False, return_complex=True)  # [F, T]
    power = spectrum.abs().pow(2)
    energies = mel_filterbank(n_fft, sample_rate, n_mels).T @ power  # [n_mels, T]
    logs = torch.log(energies + 1e-10)
    return torch.cat([logs.mean(dim=1), logs.std(dim=1, unbiased=False)])
