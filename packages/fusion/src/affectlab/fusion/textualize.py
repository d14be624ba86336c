"""Non-verbal cues turned into text for a language model, and into feature vectors for a fusion model.

The prompt template of "Textualized and Feature-based Models for Compound Multimodal Emotion Recognition in the Wild"
(Richet et al., 2024): the enabled modalities concatenated in the order text, visual, audio:

    text    Speech transcription of the video : {transcript};
    visual  Facial Action Units activated during the video : {AU names}; Emotions predicted from visual modality:
            {top-3 emotions};
    audio   Characteristics of the prosody : {tone}; Audio emotional state : Arousal level (between 0 and 1) of a,
            Valence level (between 0 and 1) of v, Dominance level (between 0 and 1) of d

(each part ends with "; " except the audio one, exactly as published). An action unit is listed when its intensity,
max-pooled over the window's frames, is above 0.5, in the order of ACTION_UNITS, joined by ", "; "No face detected"
when none fires (or no frame has a face). The top-3 visual emotions are the highest mean scores over the frames with
a face, joined by ", ". The tone is the 10 strongest prosody emotions, strongest first, "High X" above 0.3 and "Low X"
otherwise. Numbers are written with two decimals; with ``avd_levels=True`` the audio state is written
"Arousal level High, Valence level Low, Dominance level High" (High above 0.5).

The cues come as CSV tables that external tools write (py-feat for action units and facial emotions, a prosody model
such as Hume's for the tones, an arousal/valence/dominance regressor, a speech recogniser), one folder per data set:

    transcripts.csv      segment_id,transcript                         one row per segment
    action_units.csv     segment_id,frame,AU01,AU02,...,AU43           one row per frame, intensities in [0, 1];
                                                                       a frame without a face has empty AU cells
    visual_emotions.csv  segment_id,frame,anger,disgust,fear,happiness,sadness,surprise,neutral   one row per frame
    prosody.csv          segment_id,<emotion>,<emotion>,...            one row per segment, any (>= 1) named emotions
    avd.csv              segment_id,arousal,valence,dominance          one row per segment, values in [0, 1]

A segment absent from a table has no such cue (no face, no audio); an absent file means the cue is missing for every
segment. `write_synthetic_cue_tables` writes the embedded default: label-dependent random cues in these formats.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class CueTableError(ValueError):
    """A cue table or transcript that cannot be textualized; the message names the file, the row and what was expected
    (affectlab.fusion does not depend on affectlab.datasets, hence its own type)."""


# py-feat's 20 action units, in the order the prompt lists them.
ACTION_UNITS: dict[str, str] = {
    "AU01": "Inner Brow Raiser",
    "AU02": "Outer Brow Raiser",
    "AU04": "Brow Lowerer",
    "AU05": "Upper Lid Raiser",
    "AU06": "Cheek Raiser",
    "AU07": "Lid Tightener",
    "AU09": "Nose Wrinkler",
    "AU10": "Upper Lip Raiser",
    "AU11": "Nasolabial Deepener",
    "AU12": "Lip Corner Puller",
    "AU14": "Dimpler",
    "AU15": "Lip Corner Depressor",
    "AU17": "Chin Raiser",
    "AU20": "Lip Stretcher",
    "AU23": "Lip Tightener",
    "AU24": "Lip Pressor",
    "AU25": "Lips Part",
    "AU26": "Jaw Drop",
    "AU28": "Lip Suck",
    "AU43": "Eyes Closed",
}
VISUAL_EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
# The prosody emotions the synthetic tables carry (a subset of Hume's 48); real tables may name any others.
SYNTHETIC_PROSODY = (
    "Amusement", "Anger", "Anxiety", "Boredom", "Calmness", "Confusion", "Contempt", "Disappointment",
    "Distress", "Excitement", "Fear", "Interest", "Joy", "Sadness", "Surprise (negative)", "Surprise (positive)",
)
AVD = ("arousal", "valence", "dominance")
MODALITIES = ("text", "visual", "audio")

AU_THRESHOLD = 0.5  # an action unit "fires" above this max-pooled intensity
TONE_THRESHOLD = 0.3  # a prosody emotion is "High" above this score
TONE_COUNT = 10
TOP_EMOTIONS = 3
LEVEL_THRESHOLD = 0.5  # arousal/valence/dominance "High" above this (avd_levels=True)
NO_FACE = "No face detected"

TABLE_FILES = {
    "transcripts": "transcripts.csv",
    "action_units": "action_units.csv",
    "visual_emotions": "visual_emotions.csv",
    "prosody": "prosody.csv",
    "avd": "avd.csv",
}


# --- the template ----------------------------------------------------------------------------------------------------


def text_part(transcript: str, where: str = "transcript") -> str:
    if transcript is None or not str(transcript).strip():
        raise CueTableError(f"{where}: the transcript is empty; expected the words spoken in the segment")
    return f"Speech transcription of the video : {' '.join(str(transcript).split())}; "


def visual_part(action_units: np.ndarray | None, emotions: np.ndarray | None,
                emotion_names: Sequence[str] = VISUAL_EMOTIONS) -> str:
    """``action_units`` [frames, 20] (NaN rows: no face), ``emotions`` [frames, len(emotion_names)]; None: no face."""
    pooled = _nanmax(action_units)
    fired = [] if pooled is None else [name for name, v in zip(ACTION_UNITS.values(), pooled) if v > AU_THRESHOLD]
    units = ", ".join(fired) if fired else NO_FACE
    mean = _nanmean(emotions)
    if mean is None:
        top = NO_FACE
    else:
        order = sorted(range(len(mean)), key=lambda k: -mean[k])  # stable: ties keep the table's column order
        top = ", ".join(emotion_names[k] for k in order[:TOP_EMOTIONS])
    return (f"Facial Action Units activated during the video : {units}; "
            f"Emotions predicted from visual modality: {top}; ")


def audio_part(prosody: Mapping[str, float] | None, avd: Sequence[float] | None, avd_levels: bool = False) -> str:
    """``prosody``: emotion name -> score; ``avd``: (arousal, valence, dominance) in [0, 1]. None: not available."""
    parts = []
    if prosody:
        ranked = sorted(prosody.items(), key=lambda item: -item[1])[:TONE_COUNT]
        tone = ", ".join(f"{'High' if score > TONE_THRESHOLD else 'Low'} {name}" for name, score in ranked)
        parts.append(f"Characteristics of the prosody : {tone}; ")
    if avd is not None:
        names = ("Arousal", "Valence", "Dominance")
        if avd_levels:
            state = ", ".join(f"{n} level {'High' if v > LEVEL_THRESHOLD else 'Low'}" for n, v in zip(names, avd))
        else:
            state = ", ".join(f"{n} level (between 0 and 1) of {v:.2f}" for n, v in zip(names, avd))
        parts.append(f"Audio emotional state : {state}")
    return "".join(parts)


def _nanmax(frames: np.ndarray | None) -> np.ndarray | None:
    if frames is None:
        return None
    frames = np.asarray(frames, dtype=np.float64)
    face = ~np.isnan(frames).any(axis=1)
    return frames[face].max(axis=0) if face.any() else None


def _nanmean(frames: np.ndarray | None) -> np.ndarray | None:
    if frames is None:
        return None
    frames = np.asarray(frames, dtype=np.float64)
    face = ~np.isnan(frames).any(axis=1)
    return frames[face].mean(axis=0) if face.any() else None


# --- the tables ------------------------------------------------------------------------------------------------------


def _rows(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = [cell.strip() for cell in next(reader, [])]
            rows = [(reader.line_num, row) for row in reader if any(cell.strip() for cell in row)]
    except FileNotFoundError:
        raise CueTableError(f"{path}: cue table not found") from None
    if not header or header[0] != "segment_id":
        raise CueTableError(f"{path}:1: header {header!r}; expected segment_id first")
    for line, row in rows:
        if len(row) != len(header):
            raise CueTableError(f"{path}:{line}: {len(row)} cells; expected {len(header)} ({','.join(header)})")
    return header, rows


def _number(cell: str, where: str, column: str, empty_ok: bool) -> float:
    if not cell.strip():
        if empty_ok:
            return math.nan
        raise CueTableError(f"{where}: column {column!r} is empty; expected a number in [0, 1]")
    try:
        value = float(cell)
    except ValueError:
        raise CueTableError(f"{where}: column {column!r} holds {cell!r}; expected a number in [0, 1]") from None
    if not 0.0 <= value <= 1.0:
        raise CueTableError(f"{where}: column {column!r} holds {value:g}; expected a number in [0, 1]")
    return value


def read_transcripts(path: str | Path) -> dict[str, str]:
    path = Path(path)
    header, rows = _rows(path)
    if header != ["segment_id", "transcript"]:
        raise CueTableError(f"{path}:1: header {header!r}; expected segment_id,transcript")
    found = {}
    for line, (segment, text) in rows:
        text_part(text, f"{path}:{line} (segment {segment.strip()!r})")  # an empty transcript is an error here
        found[segment.strip()] = " ".join(text.split())
    return found


def read_frame_table(path: str | Path, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """A per-frame table (segment_id, frame, then ``columns``) -> segment id -> [frames, len(columns)] in frame
    order; empty cells (a frame without a face) become NaN."""
    path = Path(path)
    header, rows = _rows(path)
    missing = [c for c in ("frame", *columns) if c not in header]
    if missing:
        raise CueTableError(f"{path}:1: missing column(s) {missing}; expected segment_id,frame,{','.join(columns)}")
    index = [header.index(c) for c in columns]
    frames: dict[str, list[tuple[int, list[float]]]] = {}
    for line, row in rows:
        where = f"{path}:{line}"
        try:
            frame = int(row[header.index("frame")])
        except ValueError:
            raise CueTableError(f"{where}: frame {row[header.index('frame')]!r}; expected an integer") from None
        values = [_number(row[k], where, c, empty_ok=True) for k, c in zip(index, columns)]
        if any(math.isnan(v) for v in values) and not all(math.isnan(v) for v in values):
            raise CueTableError(f"{where}: some of {list(columns)} are empty; expected all (a face) or none (no face)")
        frames.setdefault(row[0].strip(), []).append((frame, values))
    return {seg: np.array([v for _, v in sorted(items)], dtype=np.float64) for seg, items in frames.items()}


def read_segment_table(path: str | Path, columns: Sequence[str] | None = None) -> tuple[tuple[str, ...], dict]:
    """A per-segment table -> (its value columns, segment id -> [columns]); ``columns`` None takes every column."""
    path = Path(path)
    header, rows = _rows(path)
    if columns is None:
        columns = header[1:]
        if not columns:
            raise CueTableError(f"{path}:1: no column after segment_id; expected at least one score column")
    missing = [c for c in columns if c not in header]
    if missing:
        raise CueTableError(f"{path}:1: missing column(s) {missing}; expected segment_id,{','.join(columns)}")
    index = [header.index(c) for c in columns]
    values = {}
    for line, row in rows:
        where = f"{path}:{line}"
        segment = row[0].strip()
        if segment in values:
            raise CueTableError(f"{where}: segment {segment!r} repeats; expected one row per segment")
        values[segment] = np.array([_number(row[k], where, c, empty_ok=False) for k, c in zip(index, columns)])
    return tuple(columns), values


@dataclass
class CueTables:
    """The cues of one data set, by segment id; a table that is None is missing for every segment."""

    transcripts: dict[str, str] | None = None
    action_units: dict[str, np.ndarray] | None = None
    visual_emotions: dict[str, np.ndarray] | None = None
    prosody: dict[str, np.ndarray] | None = None
    avd: dict[str, np.ndarray] | None = None
    prosody_names: tuple[str, ...] = ()
    source: str = "cue tables"
    feature_sizes: dict[str, int] = field(init=False)

    def __post_init__(self):
        self.feature_sizes = {"visual": len(ACTION_UNITS) + len(VISUAL_EMOTIONS),
                              "audio": len(self.prosody_names) + len(AVD)}

    def transcript(self, segment: str) -> str:
        if self.transcripts is None or segment not in self.transcripts:
            raise CueTableError(f"{self.source}: no transcript for segment {segment!r}; expected a row in "
                               f"{TABLE_FILES['transcripts']}")
        return self.transcripts[segment]

    def prompt(self, segment: str, modalities: Sequence[str] = MODALITIES, avd_levels: bool = False) -> str:
        """The published template for one segment, with the enabled ``modalities`` in the order text, visual, audio."""
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown or not modalities:
            raise ValueError(f"modalities={list(modalities)}: expected a non-empty subset of {list(MODALITIES)}")
        parts = []
        if "text" in modalities:
            parts.append(text_part(self.transcript(segment), f"{self.source} segment {segment!r}"))
        if "visual" in modalities:
            parts.append(visual_part(_get(self.action_units, segment), _get(self.visual_emotions, segment)))
        if "audio" in modalities:
            prosody = _get(self.prosody, segment)
            tones = dict(zip(self.prosody_names, prosody)) if prosody is not None else None
            parts.append(audio_part(tones, _get(self.avd, segment), avd_levels))
        return "".join(parts)

    def features(self, segment: str) -> dict[str, np.ndarray | None]:
        """The non-verbal feature vectors of one segment: visual = max-pooled AUs + mean facial emotions (27), audio =
        prosody scores + arousal/valence/dominance; None where the modality is missing (no face, no audio)."""
        units, emotions = _nanmax(_get(self.action_units, segment)), _nanmean(_get(self.visual_emotions, segment))
        visual = None
        if units is not None or emotions is not None:
            visual = np.concatenate([_or_zeros(units, len(ACTION_UNITS)), _or_zeros(emotions, len(VISUAL_EMOTIONS))])
        prosody, avd = _get(self.prosody, segment), _get(self.avd, segment)
        audio = None
        if prosody is not None or avd is not None:
            audio = np.concatenate([_or_zeros(prosody, len(self.prosody_names)), _or_zeros(avd, len(AVD))])
        return {"visual": visual, "audio": audio}


def _get(table: dict | None, segment: str):
    return None if table is None else table.get(segment)


def _or_zeros(values: np.ndarray | None, size: int) -> np.ndarray:
    return np.zeros(size) if values is None else np.asarray(values, dtype=np.float64)


def load_cue_tables(folder: str | Path) -> CueTables:
    """The tables of TABLE_FILES found in ``folder`` (an absent file: that cue is missing everywhere)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CueTableError(f"{folder}: no such cue table folder; expected {', '.join(TABLE_FILES.values())}")
    path = {key: folder / name for key, name in TABLE_FILES.items()}
    exists = {key: p.is_file() for key, p in path.items()}
    prosody_names, prosody = (), None
    if exists["prosody"]:
        prosody_names, prosody = read_segment_table(path["prosody"])
    return CueTables(
        transcripts=read_transcripts(path["transcripts"]) if exists["transcripts"] else None,
        action_units=read_frame_table(path["action_units"], list(ACTION_UNITS)) if exists["action_units"] else None,
        visual_emotions=(read_frame_table(path["visual_emotions"], VISUAL_EMOTIONS)
                         if exists["visual_emotions"] else None),
        prosody=prosody,
        avd=read_segment_table(path["avd"], AVD)[1] if exists["avd"] else None,
        prosody_names=tuple(prosody_names),
        source=str(folder),
    )


# --- the embedded default: synthetic tables --------------------------------------------------------------------------

_WORDS = ("so", "well", "I", "think", "we", "should", "go", "now", "what", "really", "the", "it", "was", "just",
          "about", "there", "that", "you", "know", "again", "maybe", "right", "here", "then")


def write_synthetic_cue_tables(
    folder: str | Path,
    segments: Sequence[tuple[str, int]],
    num_classes: int,
    *,
    transcripts: Mapping[str, str] | None = None,
    frames: int = 6,
    signal: float = 1.0,
    no_face: float = 0.1,
    no_audio: float = 0.1,
    seed: int = 0,
) -> Path:
    """Write the five tables for ``segments`` (segment id, class index): each class has its own random pattern of
    firing action units, facial emotions, prosody tones and arousal/valence/dominance, which every segment of the
    class shows with noise (``signal`` 0 makes the cues pure noise); a share ``no_face`` of segments has no face
    (empty AU and emotion cells) and ``no_audio`` none of the audio tables. Transcripts: the given ones, else random
    words with a class word ("cueN") in most of them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    units_on = [rng.choice(len(ACTION_UNITS), size=3, replace=False) for _ in range(num_classes)]
    emotion_bias = rng.normal(size=(num_classes, len(VISUAL_EMOTIONS)))
    prosody_bias = np.zeros((num_classes, len(SYNTHETIC_PROSODY)))  # 4 tones per class rise above the threshold
    for row in prosody_bias:
        row[rng.choice(len(SYNTHETIC_PROSODY), size=4, replace=False)] = rng.uniform(0.25, 0.6, size=4)
    avd_centre = rng.uniform(0.2, 0.8, size=(num_classes, len(AVD)))
    with (open(folder / TABLE_FILES["transcripts"], "w", newline="", encoding="utf-8") as f_text,
          open(folder / TABLE_FILES["action_units"], "w", newline="", encoding="utf-8") as f_au,
          open(folder / TABLE_FILES["visual_emotions"], "w", newline="", encoding="utf-8") as f_emo,
          open(folder / TABLE_FILES["prosody"], "w", newline="", encoding="utf-8") as f_pro,
          open(folder / TABLE_FILES["avd"], "w", newline="", encoding="utf-8") as f_avd):
        text, au, emo, pro, avd = (csv.writer(f) for f in (f_text, f_au, f_emo, f_pro, f_avd))
        text.writerow(["segment_id", "transcript"])
        au.writerow(["segment_id", "frame", *ACTION_UNITS])
        emo.writerow(["segment_id", "frame", *VISUAL_EMOTIONS])
        pro.writerow(["segment_id", *SYNTHETIC_PROSODY])
        avd.writerow(["segment_id", *AVD])
        for segment, label in segments:
            if transcripts is not None:
                spoken = transcripts[segment]
            else:
                words = list(rng.choice(_WORDS, size=int(rng.integers(4, 9))))
                if rng.random() < 0.8:
                    words.insert(int(rng.integers(0, len(words) + 1)), f"cue{label}")
                spoken = " ".join(words)
            text.writerow([segment, spoken])
            face = rng.random() >= no_face
            for frame in range(frames):
                if not face:
                    au.writerow([segment, frame, *[""] * len(ACTION_UNITS)])
                    emo.writerow([segment, frame, *[""] * len(VISUAL_EMOTIONS)])
                    continue
                level = rng.uniform(0.0, 0.45, size=len(ACTION_UNITS))
                level[units_on[label]] += signal * rng.uniform(0.2, 0.55, size=3)
                au.writerow([segment, frame, *(f"{v:.3f}" for v in np.clip(level, 0.0, 1.0))])
                logits = signal * emotion_bias[label] + rng.normal(size=len(VISUAL_EMOTIONS))
                probs = np.exp(logits) / np.exp(logits).sum()
                emo.writerow([segment, frame, *(f"{v:.4f}" for v in probs)])
            if rng.random() >= no_audio:
                tones = np.clip(signal * prosody_bias[label] + rng.uniform(0.0, 0.25, len(SYNTHETIC_PROSODY)), 0, 1)
                pro.writerow([segment, *(f"{v:.3f}" for v in tones)])
                state = np.clip(avd_centre[label] * signal + (1 - signal) * 0.5 + rng.normal(0, 0.1, 3), 0, 1)
                avd.writerow([segment, *(f"{v:.3f}" for v in state)])
    return folder
