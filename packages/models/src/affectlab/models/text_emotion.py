"""Text emotion modality: a transformers sequence classifier's own labels mapped onto the 8 basic emotions.

Scene descriptions and transcripts, given as text, go through any Hugging Face emotion classifier (by default the
Ekman-style `j-hartmann/emotion-english-distilroberta-base`: anger, disgust, fear, joy, neutral, sadness, surprise).
Its softmax over its own labels (config.id2label) is summed onto the basic emotions `classes` (AffWild2's 8: the basic8
label set of affectlab.datasets, which the caller passes) through a name mapping: the synonyms below, or a
`label_map` the user gives for labels they do not cover (GoEmotions' "admiration" -> "Other", say). A basic emotion
that no label maps to gets probability 0; a label that maps to nothing is an error, never silently dropped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from affectlab.models.errors import ModelError
from affectlab.models.text_classifier import TextClassifier, resolve_model

# label names classifiers use (lower case) -> basic emotion
LABEL_SYNONYMS: dict[str, str] = {
    **{name: "Neutral" for name in ("neutral", "neutrality", "calm", "none", "no emotion")},
    **{name: "Anger" for name in ("anger", "angry", "annoyance", "rage")},
    **{name: "Disgust" for name in ("disgust", "disgusted")},
    **{name: "Fear" for name in ("fear", "fearful", "scared", "afraid", "nervousness")},
    **{name: "Happiness" for name in ("happiness", "happy", "joy", "joyful", "amusement")},
    **{name: "Sadness" for name in ("sadness", "sad", "grief")},
    **{name: "Surprise" for name in ("surprise", "surprised")},
    **{name: "Other" for name in ("other", "others", "contempt")},
}


def basic_mapping(id2label: Mapping[int, str], classes: Sequence[str], label_map: Mapping[str, str] | None = None,
                  model: str = "the classifier") -> torch.Tensor:
    """[num_labels, len(classes)] 0/1 matrix sending each classifier label to its basic emotion.

    `label_map` (classifier label -> basic emotion name, case-insensitive) is consulted before the synonyms.
    """
    basic_index = {name.lower(): k for k, name in enumerate(classes)}
    user = {str(key).strip().lower(): str(value) for key, value in (label_map or {}).items()}
    for key, value in user.items():
        if value.strip().lower() not in basic_index:
            raise ModelError(f"label_map[{key!r}] = {value!r}; expected one of {list(classes)}")
    labels = [str(id2label[i]) for i in range(len(id2label))]
    matrix = torch.zeros(len(labels), len(classes))
    for row, label in enumerate(labels):
        name = label.strip().lower()
        target = user.get(name) or LABEL_SYNONYMS.get(name)
        if target is None:
            raise ModelError(
                f"{model}: label {label!r} (id {row}) of its config.id2label {labels} maps to no basic emotion; "
                f"expected one of {sorted(LABEL_SYNONYMS)} or an entry label_map[{label!r}] naming one of "
                f"{list(classes)}"
            )
        matrix[row, basic_index[target.strip().lower()]] = 1.0
    return matrix


class TextEmotionClassifier(nn.Module):
    """Texts -> [B, C] basic-emotion probabilities: the classifier's softmax summed per basic emotion."""

    def __init__(self, classifier: TextClassifier, mapping: torch.Tensor):
        super().__init__()
        self.classifier = classifier.eval()
        self.register_buffer("mapping", mapping)

    @torch.no_grad()
    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        return torch.softmax(self.classifier(texts).float(), dim=-1) @ self.mapping

    @torch.no_grad()
    def predict(self, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """[N, C] for any number of texts, `batch_size` at a time."""
        if not texts:
            return torch.zeros(0, self.mapping.shape[1])
        return torch.cat([self(texts[start : start + batch_size]) for start in range(0, len(texts), batch_size)])


def load_text_emotion_classifier(name_or_path: str, classes: Sequence[str],
                                 label_map: Mapping[str, str] | None = None,
                                 max_length: int = 128) -> TextEmotionClassifier:
    """A Hub id or local folder of a sequence classifier (with its head and id2label) as a basic-emotion predictor."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    source = resolve_model(name_or_path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForSequenceClassification.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ModelError(f"cannot load the text emotion classifier {name_or_path!r} ({source}): {error}; expected a "
                         "local folder with config.json, weights and a tokenizer, or a reachable Hub id") from error
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    mapping = basic_mapping(model.config.id2label, classes, label_map, model=str(name_or_path))
    return TextEmotionClassifier(TextClassifier(model, tokenizer, max_length), mapping)
