"""The embedded default for the compound-expression experiment: a small synthetic C-EXPR-DB plus basic-expression data.

    cexpr/annotation/<V>.csv     C-EXPR-DB annotation CSVs (padded marks like "1 ", a 10 ms segment, gaps, Other)
    cexpr/videos/<V>.avi         the videos (Motion-JPEG AVI, `affectlab.datasets.video.write_mjpeg_avi`)
    cexpr/tables/<modality>.csv  modality tables for the 4 s / 2 s windows of every video
    affwild2/EXPR/<V>.txt        AffWild2 expression label files, the basic-expression training data of the fusion
    affwild2/videos/<V>.avi      their videos
    affwild2/tables/<modality>.csv
    afew/videos/<Class>/<clip>.avi   AFEW-style clips, one folder per class (no Other), one segment each
    afew/tables/<modality>.csv
    <half>/texts/{scene_text,transcript}.csv   with texts=True: short scene descriptions and transcripts per window

The modalities stand in for the off-the-shelf predictors (scene description, audio, transcript): each sees a
window's true basic-emotion mix (a compound is half one basic emotion, half the other) through its own noise and its
own per-class reliability (audio hears Anger, Fear and Surprise well, the scene text sees Happiness and Sadness), and
misses some windows (a transcript needs speech). So the best fusion weights differ per class, as MHPF assumes.
With texts=True each half also gets text tables: a scene description and a transcript per window, worded from
emotions drawn from the window's true mix (often a wrong one), for the text-classifier path of the experiment.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from affectlab.datasets.affwild2 import AFEW_FOLDERS, AFFWILD2_EXPRESSIONS
from affectlab.datasets.cexpr import CEXPR_CLASSES, COMPOUND_PAIRS, HEADER, OTHER, segment_windows, window_id
from affectlab.datasets.modality_tables import write_modality_table, write_text_table
from affectlab.datasets.generated import generate_once
from affectlab.datasets.video import write_mjpeg_avi

GENERATOR_VERSION = 5

# per modality: how strongly it sees each basic emotion (AffWild2 order), its noise, how often it has nothing
MODALITIES: dict[str, dict] = {
    "scene_text": {"gain": (2, 1, 1, 1, 5, 5, 1, 1), "noise": 1.0, "missing": 0.05},
    "audio": {"gain": (2, 5, 2, 5, 1, 1, 5, 1), "noise": 1.0, "missing": 0.1},
    "transcript": {"gain": (2, 2, 4, 2, 3, 3, 2, 1), "noise": 1.5, "missing": 0.3},
}
# words for the synthetic texts, per basic emotion (AffWild2 order)
_SCENE_WORDS = {
    "Neutral": ("calm", "expressionless", "quiet"), "Anger": ("angry", "furious", "shouting"),
    "Disgust": ("disgusted", "repulsed", "grimacing"), "Fear": ("scared", "terrified", "afraid"),
    "Happiness": ("happy", "joyful", "laughing"), "Sadness": ("sad", "crying", "gloomy"),
    "Surprise": ("surprised", "astonished", "amazed"), "Other": ("busy", "distracted", "turning away"),
}
_SPEECH = {
    "Neutral": ("okay, let us go on.", "it is the usual day."), "Anger": ("stop it, I am so angry!", "how dare you!"),
    "Disgust": ("ugh, that is disgusting.", "gross, take it away."), "Fear": ("I am scared, help!", "no, please, no!"),
    "Happiness": ("this is wonderful, I love it!", "haha, great news!"),
    "Sadness": ("I miss her so much.", "it is all lost."),
    "Surprise": ("wow, I did not expect that!", "what? really?"), "Other": ("hmm.", "where is my phone?"),
}
TEXT_MODALITIES = {"scene_text": 0.05, "transcript": 0.3}  # how often each has nothing for a window


def make_synthetic_cexpr(
    root: str | Path,
    *,
    num_videos: int = 8,
    num_basic_videos: int = 40,
    afew_clips_per_class: int = 6,
    seconds: tuple[float, float] = (16.0, 30.0),
    fps: int = 10,
    frame_size: int = 64,
    seed: int = 0,
    texts: bool = False,
) -> Path:
    """Write the synthetic data under `root` and return `root`."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    cexpr = root / "cexpr"
    window_ids, window_mix = [], []
    for v in range(1, num_videos + 1):
        name = f"{v:02d}"
        num_frames = int(rng.uniform(*seconds) * fps)
        rows, labels = _compound_timeline(num_frames, fps, rng, first_video=v == 1)
        _write_annotation(cexpr / "annotation" / f"{name}.csv", rows)
        faces = [COMPOUND_PAIRS.get(CEXPR_CLASSES[label], ()) if label >= 0 else () for label in labels.tolist()]
        _write_video(cexpr / "videos" / f"{name}.avi", faces, fps, frame_size, rng)
        for k, (start, end) in enumerate(segment_windows(num_frames, fps)):
            window_ids.append(window_id(name, k))
            window_mix.append(_basic_mix(labels[start:end]))
    _write_tables(cexpr / "tables", window_ids, np.array(window_mix), rng)
    if texts:
        _write_texts(cexpr / "texts", window_ids, np.array(window_mix), rng)

    basic = root / "affwild2"
    basic_ids, basic_mix = [], []
    (basic / "EXPR").mkdir(parents=True, exist_ok=True)
    for v in range(1, num_basic_videos + 1):
        name = f"basic-{v:02d}"
        labels = _basic_timeline(int(rng.uniform(*seconds) * fps), fps, rng)
        lines = [",".join(AFFWILD2_EXPRESSIONS), *map(str, labels.tolist())]
        (basic / "EXPR" / f"{name}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        faces = [(AFFWILD2_EXPRESSIONS[label],) if label >= 0 else () for label in labels.tolist()]
        _write_video(basic / "videos" / f"{name}.avi", faces, fps, frame_size, rng)
        for k, (start, end) in enumerate(segment_windows(len(labels), fps)):
            frames = labels[start:end]
            frames = frames[frames >= 0]
            mix = np.bincount(frames, minlength=len(AFFWILD2_EXPRESSIONS)) / max(len(frames), 1)
            basic_ids.append(window_id(name, k))
            basic_mix.append(mix if len(frames) else np.eye(len(AFFWILD2_EXPRESSIONS))[0])
    _write_tables(basic / "tables", basic_ids, np.array(basic_mix), rng)
    if texts:
        _write_texts(basic / "texts", basic_ids, np.array(basic_mix), rng)

    afew = root / "afew"
    afew_ids, afew_mix = [], []
    for folder, emotion in AFEW_FOLDERS.items():
        label = AFFWILD2_EXPRESSIONS.index(emotion)
        for c in range(1, afew_clips_per_class + 1):
            num_frames = int(rng.uniform(2.0, 5.0) * fps)  # AFEW clips are a few seconds long
            _write_video(afew / "videos" / folder / f"{c:03d}.avi", [(emotion,)] * num_frames, fps, frame_size, rng)
            afew_ids.append(window_id(f"{folder}/{c:03d}", 0))  # a clip is one segment
            afew_mix.append(np.eye(len(AFFWILD2_EXPRESSIONS))[label])
    _write_tables(afew / "tables", afew_ids, np.array(afew_mix), rng)
    if texts:
        _write_texts(afew / "texts", afew_ids, np.array(afew_mix), rng)
    (root / "synthetic.json").write_text(json.dumps({"fps": fps, "modalities": list(MODALITIES)}), encoding="utf-8")
    return root


def ensure_synthetic_cexpr(cache_dir: str | Path | None = None, **params) -> Path:
    """The synthetic data for `params` (keywords of `make_synthetic_cexpr`), generated once into a cache folder named
    by their hash; written to a scratch folder and renamed, so an interrupted run leaves nothing behind."""
    return generate_once(make_synthetic_cexpr, "synthetic_cexpr", GENERATOR_VERSION, params, cache_dir)


def _compound_timeline(num_frames: int, fps: float, rng: np.random.Generator, first_video: bool):
    """Annotation rows (begin ms, end ms, label, mark text) and the per-frame labels (-1 in gaps)."""
    labels = np.full(num_frames, -1, dtype=np.int64)
    rows = []
    duration_ms = int(num_frames * 1000 / fps)
    t = 0
    if first_video:  # the real files have a 10 ms segment; so does this one
        rows.append((0, 10, 2, "1"))
        t = 10
    while True:
        t += int(rng.choice([0, 0, rng.integers(100, 1500)]))  # abutting or a short gap
        end = t + int(rng.integers(3000, 9000))
        if end > duration_ms:
            break
        label = int(rng.choice(len(CEXPR_CLASSES), p=[0.14] * 7 + [0.02]))
        rows.append((t, end, label, str(rng.choice(["1", "1", "1 ", "1  "]))))
        first, last = int(np.ceil(t * fps / 1000)), int(np.ceil(end * fps / 1000))
        labels[first:last] = label
        t = end
    return rows, labels


def _basic_timeline(num_frames: int, fps: float, rng: np.random.Generator) -> np.ndarray:
    """Per-frame basic labels in runs of 2-8 s, a few unannotated (-1) runs, classes balanced."""
    labels = np.empty(num_frames, dtype=np.int64)
    start = 0
    while start < num_frames:
        end = min(num_frames, start + int(rng.uniform(2, 8) * fps))
        labels[start:end] = -1 if rng.random() < 0.05 else int(rng.integers(len(AFFWILD2_EXPRESSIONS) - 1))
        start = end
    return labels


def _basic_mix(frame_labels: np.ndarray) -> np.ndarray:
    """The true basic-emotion mix of a window: each compound frame half each of its pair; gaps Neutral, Other Other."""
    mix = np.zeros(len(AFFWILD2_EXPRESSIONS))
    for label in frame_labels.tolist():
        if label == -1:
            mix[AFFWILD2_EXPRESSIONS.index("Neutral")] += 1
        elif label == OTHER:
            mix[AFFWILD2_EXPRESSIONS.index("Other")] += 1
        else:
            for emotion in COMPOUND_PAIRS[CEXPR_CLASSES[label]]:
                mix[AFFWILD2_EXPRESSIONS.index(emotion)] += 0.5
    return mix / max(len(frame_labels), 1)


def _write_tables(folder: Path, ids: list[str], mix: np.ndarray, rng: np.random.Generator) -> None:
    for name, spec in MODALITIES.items():
        logits = np.asarray(spec["gain"]) * mix + spec["noise"] * rng.standard_normal(mix.shape)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        probs[rng.random(len(ids)) < spec["missing"]] = np.nan
        write_modality_table(folder / f"{name}.csv", ids, probs)


def _write_texts(folder: Path, ids: list[str], mix: np.ndarray, rng: np.random.Generator) -> None:
    """A scene description naming two emotions and a transcript line per window, each emotion drawn from the mix
    70% of the time and uniformly otherwise; some windows have no text."""

    def draw() -> str:
        if rng.random() < 0.3:
            return AFFWILD2_EXPRESSIONS[int(rng.integers(len(AFFWILD2_EXPRESSIONS)))]
        return AFFWILD2_EXPRESSIONS[int(rng.choice(len(AFFWILD2_EXPRESSIONS), p=row))]

    scenes, speech = [], []
    for row in mix:
        first, second = draw(), draw()
        scenes.append(f"A {rng.choice(['man', 'woman', 'child'])} looks {rng.choice(_SCENE_WORDS[first])}, "
                      f"{rng.choice(_SCENE_WORDS[second])} in a {rng.choice(['kitchen', 'street', 'office'])}.")
        speech.append(str(rng.choice(_SPEECH[draw()])))
    for (name, missing), texts in zip(TEXT_MODALITIES.items(), (scenes, speech)):
        texts = [text if rng.random() >= missing else "" for text in texts]
        write_text_table(folder / f"{name}.csv", ids, texts)


def _write_annotation(path: Path, rows) -> None:
    def clock(ms: int) -> str:
        return f"{ms // 3_600_000:02d}:{ms // 60_000 % 60:02d}:{ms // 1000 % 60:02d}.{ms % 1000:03d}"

    lines = [",".join(f'"{name}"' for name in HEADER)]
    for begin, end, label, mark in rows:
        cells = [""] * len(CEXPR_CLASSES)
        cells[label] = f'"{mark}"'
        lines.append(",".join([clock(begin), clock(end), *cells]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_video(path: Path, faces: list[tuple[str, ...]], fps: int, size: int, rng: np.random.Generator) -> None:
    """One face per frame showing the cues of the frame's basic emotions (a compound shows both of its pair):
    open mouth = Surprise, drooping mouth = Sadness, frowning brows = Anger or Disgust, red smile = Happiness,
    wide eyes = Fear."""
    frames = []
    background = tuple(int(c) for c in rng.integers(40, 200, 3))
    skin = tuple(int(c) for c in np.array([230, 190, 150]) * rng.uniform(0.6, 1.0))
    dark, mouth = (20, 20, 20), (60, 10, 10)
    s = size / 64
    for emotions in faces:
        image = Image.new("RGB", (size, size), background)
        draw = ImageDraw.Draw(image)
        draw.ellipse((14 * s, 8 * s, 50 * s, 56 * s), fill=skin)
        eye = 4 if "Fear" in emotions else 2
        for x in (25, 39):
            draw.ellipse(((x - eye) * s, (26 - eye) * s, (x + eye) * s, (26 + eye) * s), fill=dark)
        if "Surprise" in emotions:
            draw.ellipse((28 * s, 38 * s, 36 * s, 50 * s), fill=mouth)
        if "Sadness" in emotions:
            draw.arc((24 * s, 40 * s, 40 * s, 52 * s), 200, 340, fill=mouth, width=2)
        if "Anger" in emotions or "Disgust" in emotions:
            draw.line((20 * s, 18 * s, 28 * s, 22 * s), fill=dark, width=2)
            draw.line((44 * s, 18 * s, 36 * s, 22 * s), fill=dark, width=2)
        if "Happiness" in emotions:
            draw.chord((24 * s, 36 * s, 40 * s, 48 * s), 0, 180, fill=(200, 30, 40))
        noisy = np.asarray(image, dtype=np.int16) + rng.normal(0, 4, (size, size, 3)).astype(np.int16)
        frames.append(noisy.clip(0, 255).astype(np.uint8))
    write_mjpeg_avi(path, frames, fps=fps, quality=85)
