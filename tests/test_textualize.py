"""The published prompt template, written from cue tables: exact strings, the thresholds, the table formats' errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from affectlab.fusion.textualize import (
    ACTION_UNITS,
    VISUAL_EMOTIONS,
    CueTables,
    CueTableError,
    audio_part,
    load_cue_tables,
    visual_part,
    write_synthetic_cue_tables,
)
from builders import write_csv

AU_CODES = list(ACTION_UNITS)


def au_frames(*frames: dict[str, float]) -> np.ndarray:
    """[frames, 20] intensities 0.1 except the given codes."""
    rows = np.full((len(frames), len(AU_CODES)), 0.1)
    for row, values in zip(rows, frames):
        for code, value in values.items():
            row[AU_CODES.index(code)] = value
    return rows


def emotion_frames(*frames: dict[str, float]) -> np.ndarray:
    rows = np.zeros((len(frames), len(VISUAL_EMOTIONS)))
    for row, values in zip(rows, frames):
        for name, value in values.items():
            row[VISUAL_EMOTIONS.index(name)] = value
    return rows


PROSODY = {"Joy": 0.9, "Anger": 0.05, "Calmness": 0.31, "Boredom": 0.3, "Interest": 0.6, "Fear": 0.12,
           "Sadness": 0.02, "Contempt": 0.2, "Distress": 0.5, "Amusement": 0.25, "Confusion": 0.01,
           "Excitement": 0.4}


def tables() -> CueTables:
    return CueTables(
        transcripts={"s1": "Oh my God,  he's lost it."},
        # AU01 fires on its second frame only (max-pooled); AU04 at exactly 0.5 does not fire
        action_units={"s1": au_frames({"AU01": 0.2, "AU12": 0.6, "AU04": 0.5}, {"AU01": 0.7, "AU43": 0.51})},
        visual_emotions={"s1": emotion_frames({"happiness": 0.7, "surprise": 0.3, "neutral": 0.1},
                                              {"happiness": 0.2, "surprise": 0.5, "fear": 0.25, "neutral": 0.05})},
        prosody={"s1": np.array(list(PROSODY.values()))},
        avd={"s1": np.array([0.5, 0.25, 0.8])},
        prosody_names=tuple(PROSODY),
    )


TEXT = "Speech transcription of the video : Oh my God, he's lost it.; "
VISUAL = ("Facial Action Units activated during the video : Inner Brow Raiser, Lip Corner Puller, Eyes Closed; "
          "Emotions predicted from visual modality: happiness, surprise, fear; ")
AUDIO = ("Characteristics of the prosody : High Joy, High Interest, High Distress, High Excitement, High Calmness, "
         "Low Boredom, Low Amusement, Low Contempt, Low Fear, Low Anger; "
         "Audio emotional state : Arousal level (between 0 and 1) of 0.50, Valence level (between 0 and 1) of 0.25, "
         "Dominance level (between 0 and 1) of 0.80")


def test_prompt_is_the_published_template_in_order_text_visual_audio():
    assert tables().prompt("s1") == TEXT + VISUAL + AUDIO


def test_modalities_can_be_left_out_and_keep_their_order():
    cues = tables()
    assert cues.prompt("s1", ["text"]) == TEXT
    assert cues.prompt("s1", ["audio", "visual"]) == VISUAL + AUDIO
    assert cues.prompt("s1", ["text", "audio"]) == TEXT + AUDIO


def test_arousal_valence_dominance_as_high_low_levels():
    assert audio_part(None, [0.7, 0.5, 0.51], avd_levels=True) == (
        "Audio emotional state : Arousal level High, Valence level Low, Dominance level High")


def test_tone_keeps_only_the_ten_strongest_and_thresholds_at_0_3():
    tone = audio_part({"A": 0.3, "B": 0.301}, None)
    assert tone == "Characteristics of the prosody : High B, Low A; "
    assert audio_part({f"E{k}": k / 20 for k in range(15)}, None).count(",") == 9


def test_no_face_detected_when_no_action_unit_fires_or_no_frame_has_a_face():
    quiet = au_frames({"AU06": 0.5}, {"AU09": 0.49})
    emotions = emotion_frames({"anger": 0.7, "disgust": 0.2, "fear": 0.1})
    assert visual_part(quiet, emotions) == (
        "Facial Action Units activated during the video : No face detected; "
        "Emotions predicted from visual modality: anger, disgust, fear; ")
    no_face = np.full((3, len(AU_CODES)), np.nan)
    assert visual_part(no_face, np.full((3, 7), np.nan)) == (
        "Facial Action Units activated during the video : No face detected; "
        "Emotions predicted from visual modality: No face detected; ")
    assert visual_part(None, None) == visual_part(no_face, None)


def test_frames_without_a_face_are_ignored_by_the_pooling():
    frames = au_frames({"AU25": 0.9})
    with_gap = np.vstack([np.full((1, len(AU_CODES)), np.nan), frames])
    assert visual_part(with_gap, None) == visual_part(frames, None)
    assert "Lips Part" in visual_part(with_gap, None)


def write_tables(folder: Path) -> Path:
    cues = tables()
    write_csv(folder / "transcripts.csv", ["segment_id", "transcript"], [["s1", cues.transcripts["s1"]]])
    write_csv(folder / "action_units.csv", ["segment_id", "frame", *AU_CODES],
              # frames listed out of order, and a frame without a face: the reader sorts and skips
              [["s1", 1, *cues.action_units["s1"][1]], ["s1", 0, *cues.action_units["s1"][0]],
               ["s1", 2, *[""] * len(AU_CODES)]])
    write_csv(folder / "visual_emotions.csv", ["segment_id", "frame", *VISUAL_EMOTIONS],
              [["s1", k, *row] for k, row in enumerate(cues.visual_emotions["s1"])])
    write_csv(folder / "prosody.csv", ["segment_id", *PROSODY], [["s1", *PROSODY.values()]])
    write_csv(folder / "avd.csv", ["segment_id", "arousal", "valence", "dominance"], [["s1", 0.5, 0.25, 0.8]])
    return folder


def test_tables_in_their_documented_format_give_the_same_prompt(tmp_path):
    cues = load_cue_tables(write_tables(tmp_path))
    assert cues.prompt("s1") == TEXT + VISUAL + AUDIO
    features = cues.features("s1")
    assert features["visual"].shape == (27,) and features["audio"].shape == (len(PROSODY) + 3,)
    assert features["visual"][AU_CODES.index("AU01")] == pytest.approx(0.7)  # max-pooled


def test_a_segment_absent_from_the_audio_tables_has_no_audio(tmp_path):
    folder = write_tables(tmp_path)
    (folder / "prosody.csv").unlink()
    write_csv(folder / "avd.csv", ["segment_id", "arousal", "valence", "dominance"], [])
    cues = load_cue_tables(folder)
    assert cues.prompt("s1") == TEXT + VISUAL
    assert cues.features("s1")["audio"] is None


def test_an_au_table_missing_named_columns_is_an_error_naming_the_file(tmp_path):
    folder = write_tables(tmp_path)
    write_csv(folder / "action_units.csv", ["segment_id", "frame", *AU_CODES[:-1]], [["s1", 0, *[0.1] * 19]])
    with pytest.raises(CueTableError, match=r"action_units\.csv:1: missing column\(s\) \['AU43'\]"):
        load_cue_tables(folder)


def test_an_empty_transcript_is_an_error_naming_the_file_and_row(tmp_path):
    folder = write_tables(tmp_path)
    write_csv(folder / "transcripts.csv", ["segment_id", "transcript"], [["s1", "fine"], ["s2", "   "]])
    with pytest.raises(CueTableError, match=r"transcripts\.csv:3 \(segment 's2'\): the transcript is empty"):
        load_cue_tables(folder)


def test_an_intensity_outside_0_1_is_an_error_naming_the_row_and_column(tmp_path):
    folder = write_tables(tmp_path)
    write_csv(folder / "avd.csv", ["segment_id", "arousal", "valence", "dominance"], [["s1", 0.5, 1.7, 0.8]])
    with pytest.raises(CueTableError, match=r"avd\.csv:2: column 'valence' holds 1\.7"):
        load_cue_tables(folder)


def test_synthetic_tables_are_readable_and_follow_the_label(tmp_path):
    segments = [(f"clip{k}", k % 3) for k in range(30)]
    write_synthetic_cue_tables(tmp_path, segments, 3, frames=4, no_face=0.0, no_audio=0.0, seed=0)
    cues = load_cue_tables(tmp_path)
    prompts = [cues.prompt(s) for s, _ in segments]
    assert all(p.startswith("Speech transcription of the video : ") and "Audio emotional state : " in p
               for p in prompts)
    visual = np.stack([cues.features(s)["visual"] for s, _ in segments])
    labels = np.array([label for _, label in segments])
    # each class fires its own action units: the class means differ
    assert np.abs(visual[labels == 0].mean(0) - visual[labels == 1].mean(0)).max() > 0.2
    faceless = tmp_path / "faceless"
    write_synthetic_cue_tables(faceless, segments[:3], 3, no_face=1.0, seed=0)
    assert "Action Units activated during the video : No face detected;" in load_cue_tables(faceless).prompt("clip0")
