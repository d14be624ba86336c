"""affectlab.probing: layer-wise emotion probing of language models' hidden states (plain PyTorch, no Lightning).

Extraction of pooled hidden states at chosen layers, computing nothing above the deepest (`HiddenStateExtractor`,
`select_layers`, `load_model`); an on-disk, sharded, resumable cache of them (`cached_features`, `FeatureCache`); one
probe per layer trained in one pass (`LayerProbes`, `probe_optimizer`, `fit_probes`); figures (`plot_accuracy_by_depth`,
`plot_probe_pca`, `plot_accuracy_by_offset`); the zero-shot prompting baseline (`parse_emotion`, `generate_answers`,
`score_answers`); malleability under system prompts (`malleability`, `agreement`, `probe_judge`, `classifier_judge`, `llm_judge`); and
persistence along a reply (`OffsetProbe`, `reply_states`, `fit_offset_probe`, `accuracy_by_offset`).
"""

from affectlab.probing.cache import (
    CacheKey,
    CacheMismatchError,
    FeatureCache,
    IncompleteCacheError,
    cached_features,
    default_cache_root,
    texts_hash,
)
from affectlab.probing.extract import (
    DEPTH_FRACTIONS,
    INPUT_FORMATS,
    POOLINGS,
    ExtractionError,
    HiddenStateExtractor,
    TruncationWarning,
    find_blocks,
    load_model,
    model_revision,
    select_layers,
)
from affectlab.probing.malleability import (
    SYSTEM_PROMPTS,
    ClassAgreement,
    agreement,
    classifier_judge,
    llm_judge,
    malleability,
    probe_judge,
)
from affectlab.probing.persistence import (
    OffsetProbe,
    accuracy_by_offset,
    fit_offset_probe,
    reply_states,
    sample_positions,
)
from affectlab.probing.plots import pca_2d, plot_accuracy_by_depth, plot_accuracy_by_offset, plot_probe_pca
from affectlab.probing.probes import PROBE_KINDS, LayerProbes, fit_probes, predict, probe_optimizer, warmup_cosine
from affectlab.probing.zero_shot import (
    Replies,
    ZeroShotResult,
    generate_answers,
    generate_replies,
    parse_emotion,
    score_answers,
    zero_shot_prompt,
)

__all__ = [
    "accuracy_by_offset",
    "agreement",
    "cached_features",
    "CacheKey",
    "CacheMismatchError",
    "ClassAgreement",
    "default_cache_root",
    "DEPTH_FRACTIONS",
    "ExtractionError",
    "FeatureCache",
    "find_blocks",
    "fit_offset_probe",
    "fit_probes",
    "generate_answers",
    "generate_replies",
    "HiddenStateExtractor",
    "IncompleteCacheError",
    "INPUT_FORMATS",
    "LayerProbes",
    "classifier_judge",
    "llm_judge",
    "load_model",
    "malleability",
    "model_revision",
    "OffsetProbe",
    "parse_emotion",
    "pca_2d",
    "plot_accuracy_by_depth",
    "plot_accuracy_by_offset",
    "plot_probe_pca",
    "POOLINGS",
    "predict",
    "probe_judge",
    "PROBE_KINDS",
    "probe_optimizer",
    "Replies",
    "reply_states",
    "sample_positions",
    "score_answers",
    "select_layers",
    "SYSTEM_PROMPTS",
    "texts_hash",
    "TruncationWarning",
    "warmup_cosine",
    "ZeroShotResult",
    "zero_shot_prompt",
]
