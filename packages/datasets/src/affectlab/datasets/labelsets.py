"""Label sets as data: every class vocabulary of the project (a dataset's class names in label order, and what goes
with them), one YAML file each, read by `load_label_set`.

Keys of a label set file:

- `name`, `classes` (a list, in label order): always;
- `descriptors`: one text per class (a mapping class -> text, or a list in class order), the class prompts of
  CLIP-CAER; `words`: one caption word per class (a list), the label words of zero-shot CLIP;
- `basis` (another label set's name) with `pairs` (class -> its two classes of the basis: C-EXPR-DB's compounds as
  pairs of basic expressions) or `groups` (class of the basis -> the classes of this set it gathers: GoEmotions'
  Ekman grouping);
- `annotation`: `{split: path}`, the annotation files of each split relative to the dataset root (RAER; default
  `annotation/<split>.txt`).

Bundled sets live in `labelsets/<name>.yaml` next to this module: raer_five and raer_four (RAER; `five` and `four`
for short), basic8 (AffWild2's basic expressions, the order of every modality table), cexpr (C-EXPR-DB's compounds
and Other), ekman7 (MELD and the emotion corpora), goemotions. `load_label_set` also takes the path of a user's own.
"""

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from affectlab.datasets.errors import DatasetError

KEYS = ("name", "classes", "descriptors", "words", "basis", "pairs", "groups", "annotation")


@dataclass(frozen=True)
class LabelSet:
    name: str
    classes: tuple[str, ...]
    descriptors: tuple[str, ...] = ()  # descriptors[i] describes classes[i]; empty when the set has none
    words: tuple[str, ...] = ()  # words[i] is the caption word of classes[i]; empty when the set has none
    annotation: dict[str, str] = field(default_factory=dict)  # split -> file relative to the dataset root
    basis: "LabelSet | None" = None  # the set `pairs` and `groups` name classes of
    pairs: dict[str, tuple[str, str]] = field(default_factory=dict)  # class -> two classes of the basis
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)  # class of the basis -> classes of this set

    def annotation_file(self, split: str) -> str:
        """The annotation file of `split`, relative to the dataset root."""
        return self.annotation.get(split, f"annotation/{split}.txt")

    def index(self, name: str) -> int:
        """The label of class `name`."""
        if name not in self.classes:
            raise DatasetError(f"label set {self.name!r} has no class {name!r}; its classes are {list(self.classes)}")
        return self.classes.index(name)

    @property
    def compounds(self) -> tuple[str, ...]:
        """The classes that are pairs of basis classes, in label order."""
        return tuple(c for c in self.classes if c in self.pairs)

    def pair_index(self) -> list[tuple[int, int]]:
        """Each compound's two basis labels, in the order of `compounds` (what PPA and PFSA read)."""
        return [(self.basis.index(a), self.basis.index(b)) for a, b in (self.pairs[c] for c in self.compounds)]

    def group_of(self) -> dict[int, int]:
        """This set's label -> the basis label of its group (GoEmotions -> Ekman)."""
        return {self.index(fine): self.basis.index(coarse) for coarse, fines in self.groups.items() for fine in fines}


# The paper's two RAER label sets by their short names (`data.label_set=five|four`).
SHORT_NAMES = {"five": "raer_five", "four": "raer_four"}


def bundled_label_sets() -> list[str]:
    """Names accepted by `load_label_set` without a path."""
    folder = resources.files("affectlab.datasets") / "labelsets"
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir() if entry.name.endswith(".yaml"))


_LOADED: dict[str, LabelSet] = {}  # bundled sets, parsed once per process


def load_label_set(name_or_path: str) -> LabelSet:
    """A bundled label set by name ("raer_five", or "five"/"four", "basic8", "cexpr", ...) or a user's YAML file by
    path."""
    return _load(name_or_path, None)


def _load(name_or_path: str, folder: Path | None) -> LabelSet:
    name_or_path = SHORT_NAMES.get(name_or_path, name_or_path)
    path = Path(name_or_path)
    if folder is not None and not path.is_absolute() and (folder / path).is_file():
        path = folder / path  # a user's set may name a basis beside it
    # A folder named like a bundled set (a dataset called "goemotions" in the working directory) is not a label set.
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise DatasetError(f"{path}: label set file not found; expected a YAML file with name, classes, ...")
        return _parse_label_set(path.read_text(encoding="utf-8"), str(path), path.parent)
    if name_or_path not in _LOADED:
        bundled = resources.files("affectlab.datasets") / "labelsets" / f"{name_or_path}.yaml"
        if not bundled.is_file():
            raise DatasetError(
                f"label set {name_or_path!r} is neither a file nor a bundled label set; "
                f"expected one of {bundled_label_sets()} or a path to a .yaml file"
            )
        _LOADED[name_or_path] = _parse_label_set(bundled.read_text(encoding="utf-8"),
                                                 f"{name_or_path}.yaml (bundled)")
    return _LOADED[name_or_path]


def _parse_label_set(text: str, where: str, folder: Path | None = None) -> LabelSet:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise DatasetError(f"{where}{line}: not valid YAML ({exc})") from exc
    if not isinstance(data, dict):
        raise DatasetError(
            f"{where}: top level is a {type(data).__name__}; expected a mapping with keys name, classes, ..."
        )
    unknown = sorted(set(data) - set(KEYS))
    if unknown:
        raise DatasetError(f"{where}: unknown key(s) {unknown}; expected only {', '.join(KEYS)}")

    name = data.get("name")
    if not isinstance(name, str) or not name.strip():
        raise DatasetError(f"{where}: key 'name' is {name!r}; expected a non-empty string")

    classes = data.get("classes")
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) and c.strip() for c in classes):
        raise DatasetError(f"{where}: key 'classes' is {classes!r}; expected a non-empty list of class names")
    repeated = sorted({c for c in classes if classes.count(c) > 1})
    if repeated:
        raise DatasetError(f"{where}: key 'classes' repeats {repeated}; expected each class once")
    classes = [c.strip() for c in classes]

    descriptors = _per_class(data, "descriptors", classes, where, mapping_allowed=True)
    words = _per_class(data, "words", classes, where, mapping_allowed=False)

    annotation = data.get("annotation") or {}
    if not isinstance(annotation, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in annotation.items()
    ):
        raise DatasetError(
            f"{where}: key 'annotation' is {annotation!r}; expected a mapping split -> file path, "
            "e.g. {train: annotation/train.txt, test: annotation/test.txt}"
        )

    basis, pairs, groups = None, {}, {}
    if data.get("pairs") or data.get("groups"):
        if not isinstance(data.get("basis"), str):
            raise DatasetError(f"{where}: key 'pairs' or 'groups' needs 'basis', the label set whose classes they name")
        basis = _load(data["basis"], folder)
    for key, owner, values in (("pairs", classes, basis.classes if basis else ()),
                               ("groups", basis.classes if basis else (), classes)):
        raw = data.get(key) or {}
        if not isinstance(raw, dict):
            raise DatasetError(f"{where}: key {key!r} is {raw!r}; expected a mapping class -> list of classes")
        for cls, members in raw.items():
            if cls not in owner:
                raise DatasetError(f"{where}: {key}[{cls!r}]: {cls!r} is not one of {list(owner)}")
            if not isinstance(members, list) or not members or any(m not in values for m in members) or (
                    key == "pairs" and len(members) != 2):
                size = "two" if key == "pairs" else "a non-empty list of"
                raise DatasetError(f"{where}: {key}[{cls!r}] is {members!r}; expected {size} classes of {list(values)}")
        if key == "pairs":
            pairs = {cls: tuple(members) for cls, members in raw.items()}
        else:
            groups = {cls: tuple(members) for cls, members in raw.items()}

    return LabelSet(
        name=name.strip(),
        classes=tuple(classes),
        descriptors=tuple(" ".join(t.split()) for t in descriptors),
        words=tuple(w.strip() for w in words),
        annotation={k: v.strip() for k, v in annotation.items()},
        basis=basis,
        pairs=pairs,
        groups=groups,
    )


def _per_class(data: dict, key: str, classes: list[str], where: str, mapping_allowed: bool) -> list[str]:
    """An optional key holding one non-empty text per class: a list in class order (or a mapping class -> text)."""
    raw = data.get(key)
    if raw is None:
        return []
    if isinstance(raw, dict) and mapping_allowed:
        missing = [c for c in classes if c not in raw]
        extra = sorted(str(k) for k in raw if k not in classes)
        if missing or extra:
            raise DatasetError(
                f"{where}: key {key!r} lacks {missing} and has unknown {extra}; expected one entry per class {classes}"
            )
        values = [raw[c] for c in classes]
    elif isinstance(raw, list):
        if len(raw) != len(classes):
            raise DatasetError(
                f"{where}: key {key!r} has {len(raw)} entries; expected {len(classes)}, one per class in order"
            )
        values = raw
    else:
        expected = "a mapping class -> text or a list in class order" if mapping_allowed else "a list in class order"
        raise DatasetError(f"{where}: key {key!r} is {raw!r}; expected {expected}")
    for cls, text in zip(classes, values):
        if not isinstance(text, str) or not text.strip():
            raise DatasetError(f"{where}: key {key!r} -> {cls!r} is {text!r}; expected a non-empty text")
    return values
