"""affectlab.probing: layer-wise emotion probing of language models' hidden states (plain PyTorch, no Lightning).

- extraction of pooled hidden states at chosen layers, computing nothing above the deepest (`HiddenStateExtractor`,
  `select_layers`, `load_model`; `resolve_pooling`: mean over the tokens of encoders, the last token of decoders);
  an on-disk, sharded, resumable cache of them (`cached_features`, `FeatureCache`);
- one probe per layer, all held and trained together (`LayerProbes`): to convergence with each layer's best
  weights on the validation split (`train_probes`: L-BFGS for the linear probe, AdamW with early stopping for the
  MLP), or the paper's one-epoch recipe (`fit_probes`, `probe_optimizer`);
- per-layer accuracy, macro-F1 and weighted F1 with bootstrap intervals (`bootstrap_metrics`, `decisions`) and the
  baselines beside them (`majority_baseline`, `tfidf_baseline`);
- emotion directions (`emotion_directions`), a classifier projecting on them (`fit_projection`), per-token
  trajectories (`token_trajectory`, `plot_token_trajectory`), and steering a causal LM along a direction read
  through its zero-shot answer (`steering`, `emotion_answers`, `steering_sweep`);
- figures (`plot_accuracy_by_depth` with confidence bands, `plot_probe_pca`, `plot_accuracy_by_offset`); the
  zero-shot prompting baseline (`parse_emotion`, `generate_answers`, `score_answers`); malleability under system
  prompts (`malleability`, `agreement`, `probe_judge`, `classifier_judge`, `llm_judge`); and persistence along a
  reply (`OffsetProbe`, `reply_states`, `fit_offset_probe`, `accuracy_by_offset`).

Long loops report progress through a ``progress(done, total, what)`` callback (`print_progress` prints and flushes).
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
from affectlab.probing.directions import (
    DirectionsError,
    ProjectionClassifier,
    TokenTrajectory,
    class_means,
    emotion_directions,
    fit_projection,
    token_trajectory,
)
from affectlab.probing.extract import (
    DEPTH_FRACTIONS,
    INPUT_FORMATS,
    POOLINGS,
    ExtractionError,
    HiddenStateExtractor,
    TruncationWarning,
    find_blocks,
    is_decoder,
    load_model,
    model_revision,
    resolve_pooling,
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
from affectlab.probing.metrics import (
    METRICS,
    BootstrapMetrics,
    MetricsError,
    bootstrap_metrics,
    decisions,
    majority_baseline,
    point_metrics,
    print_progress,
    tfidf_baseline,
)
from affectlab.probing.persistence import (
    OffsetProbe,
    accuracy_by_offset,
    fit_offset_probe,
    reply_states,
    sample_positions,
)
from affectlab.probing.plots import (
    pca_2d,
    plot_accuracy_by_depth,
    plot_accuracy_by_offset,
    plot_probe_pca,
    plot_token_trajectory,
)
from affectlab.probing.probes import (
    PROBE_KINDS,
    LayerProbes,
    fit_probes,
    layer_losses,
    predict,
    probe_optimizer,
    warmup_cosine,
)
from affectlab.probing.steering import (
    ANSWER_PREFIX,
    EmotionAnswers,
    SteeringError,
    SteeringSweep,
    answer_prompt,
    answer_tokens,
    emotion_answers,
    steering,
    steering_sweep,
)
from affectlab.probing.training import ProbeTraining, ProbeTrainingError, train_probes
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
    "ANSWER_PREFIX",
    "answer_prompt",
    "answer_tokens",
    "bootstrap_metrics",
    "BootstrapMetrics",
    "cached_features",
    "CacheKey",
    "CacheMismatchError",
    "class_means",
    "ClassAgreement",
    "classifier_judge",
    "decisions",
    "default_cache_root",
    "DEPTH_FRACTIONS",
    "DirectionsError",
    "emotion_answers",
    "emotion_directions",
    "EmotionAnswers",
    "ExtractionError",
    "FeatureCache",
    "find_blocks",
    "fit_offset_probe",
    "fit_probes",
    "fit_projection",
    "generate_answers",
    "generate_replies",
    "HiddenStateExtractor",
    "IncompleteCacheError",
    "INPUT_FORMATS",
    "is_decoder",
    "layer_losses",
    "LayerProbes",
    "llm_judge",
    "load_model",
    "majority_baseline",
    "malleability",
    "METRICS",
    "MetricsError",
    "model_revision",
    "OffsetProbe",
    "parse_emotion",
    "pca_2d",
    "plot_accuracy_by_depth",
    "plot_accuracy_by_offset",
    "plot_probe_pca",
    "plot_token_trajectory",
    "point_metrics",
    "POOLINGS",
    "predict",
    "print_progress",
    "probe_judge",
    "PROBE_KINDS",
    "probe_optimizer",
    "ProbeTraining",
    "ProbeTrainingError",
    "ProjectionClassifier",
    "Replies",
    "reply_states",
    "resolve_pooling",
    "sample_positions",
    "score_answers",
    "select_layers",
    "steering",
    "steering_sweep",
    "SteeringError",
    "SteeringSweep",
    "SYSTEM_PROMPTS",
    "texts_hash",
    "tfidf_baseline",
    "token_trajectory",
    "TokenTrajectory",
    "train_probes",
    "TruncationWarning",
    "warmup_cosine",
    "zero_shot_prompt",
    "ZeroShotResult",
]
