"""Label sets as data: the class names of a dataset, in label order, and one text descriptor per class.

A label set is a YAML file with keys `name`, `classes` (a list), `descriptors` (a mapping class -> text, or a list
in class order) and optionally `annotation` (`{split: path}`, the annotation files of each split relative to the
dataset root; default `annotation/<split>.txt`). Bundled sets live in `labelsets/<name>.yaml` next to this module
(`five` and `four` are short for RAER's `raer_five` and `raer_four`); `load_label_set` also takes the path of a
user's own file.
"""

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from affectlab.datasets.errors import DatasetError


@dataclass(frozen=True)
class LabelSet:
    name: str
    classes: tuple[str, ...]
    descriptors: tuple[str, ...]  # descriptors[i] describes classes[i]
    annotation: dict[str, str] = field(default_factory=dict)  # split -> file relative to the dataset root

    def annotation_file(self, split: str) -> str:
        """The annotation file of `split`, relative to the dataset root."""
        return self.annotation.get(split, f"annotation/{split}.txt")


# The paper's two RAER label sets by their short names (`data.label_set=five|four`).
SHORT_NAMES = {"five": "raer_five", "four": "raer_four"}


def bundled_label_sets() -> list[str]:
    """Names accepted by `load_label_set` without a path."""
    folder = resources.files("affectlab.datasets") / "labelsets"
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def load_label_set(name_or_path: str) -> LabelSet:
    """A bundled label set by name ("raer_five", or "five"/"four") or a user's YAML file by path."""
    name_or_path = SHORT_NAMES.get(name_or_path, name_or_path)
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise DatasetError(
                f"{path}: label set file not found; expected a YAML file with name, classes, descriptors"
            )
        return _parse_label_set(path.read_text(encoding="utf-8"), str(path))
    bundled = resources.files("affectlab.datasets") / "labelsets" / f"{name_or_path}.yaml"
    if not bundled.is_file():
        raise DatasetError(
            f"label set {name_or_path!r} is neither a file nor a bundled label set; "
            f"expected one of {bundled_label_sets()} or a path to a .yaml file"
        )
    return _parse_label_set(bundled.read_text(encoding="utf-8"), f"{name_or_path}.yaml (bundled)")


def _parse_label_set(text: str, where: str) -> LabelSet:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise DatasetError(f"{where}{line}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise DatasetError(
            f"{where}: top level is a {type(data).__name__}; expected a mapping with keys name, classes, descriptors"
        )
    unknown = sorted(set(data) - {"name", "classes", "descriptors", "annotation"})
    if unknown:
        raise DatasetError(
            f"{where}: unknown key(s) {unknown}; expected only name, classes, descriptors, annotation"
        )

    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DatasetError(f"{where}: key 'name' is {name!r}; expected a non-empty string")

    classes = data.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c.strip() for c in classes):
        raise DatasetError(f"{where}: key 'classes' is {classes!r}; expected a non-empty list of class names")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise DatasetError(f"{where}: key 'classes' repeats {repeated}; expected each class once")

    raw = data.get("descriptors")
    if isinstance(raw, dict):
        missing = [c for c in classes if c not in raw]
        extra = sorted(str(k) for k in raw if k not in classes)
        if missing or extra:
            raise DatasetError(
                f"{where}: key 'descriptors' lacks {missing} and has unknown {extra}; "
                f"expected one entry per class {classes}"
            )
        descriptors = [raw[c] for c in classes]
    elif isinstance(raw, list):
        if len(raw) != len(classes):
            raise DatasetError(
                f"{where}: key 'descriptors' has {len(raw)} entries; expected {len(classes)}, one per class in order"
            )
        descriptors = raw
    else:
        raise DatasetError(
            f"{where}: key 'descriptors' is {raw!r}; expected a mapping class -> text or a list in class order"
        )
    for cls, text in zip(classes, descriptors):
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(f"{where}: key 'descriptors' -> {cls!r} is {text!r}; expected a non-empty text")

    annotation = data.get("annotation") or {}
    if not isinstance(annotation, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in annotation.items()
    ):
        raise DatasetError(
            f"{where}: key 'annotation' is {annotation!r}; expected a mapping split -> file path, "
            "e.g. {train: annotation/train.txt, test: annotation/test.txt}"
        )

    return LabelSet(
        name=name.strip(),
        classes=tuple(c.strip() for c in classes),
        descriptors=tuple(" ".join(t.split()) for t in descriptors),
        annotation={k: v.strip() for k, v in annotation.items()},
    )
