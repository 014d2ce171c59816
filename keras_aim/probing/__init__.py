"""Probing, fine-tuning and evaluating AIM backbones.

- `features`: `block_features` (the averaged raw outputs of chosen blocks,
  computed once, in memory or on disk), `feature_model`, `IndexedBatches`.
- `probes`: `train_probe` / `probe_accuracy` (attentive or linear head on
  cached features), `pixel_baseline`, `compile_probe`.
- `finetune`: `train_classifier` (full or LoRA, layer-wise decay).
- `metrics`: `predict_logits`, `classification_metrics`, `check_labels`.
- `repeated`: `RepeatedProbe`, one compiled probe reused across calls;
  `FeatureProbe`, a head retrained on cached features (arms, draws).
- `divergence`: `fit_or_diverge`, the NaN guard of every probe and
  fine-tuning `fit` (a `TrainingDivergedError`, nothing saved).
- `knn`: `knn_votes` / `knn_metrics`, DINO's weighted k-NN on features.
- `label_efficiency`: `class_balanced_subset` (N labels per class),
  `label_efficiency` (the few-label curve), `logistic_regression_scores`.
"""

from keras_aim.probing.features import IN_MEMORY_LIMIT_BYTES
from keras_aim.probing.features import IndexedBatches
from keras_aim.probing.features import block_features
from keras_aim.probing.features import feature_model
from keras_aim.probing.finetune import train_classifier
from keras_aim.probing.knn import knn_metrics
from keras_aim.probing.knn import knn_votes
from keras_aim.probing.label_efficiency import LABELS_PER_CLASS
from keras_aim.probing.label_efficiency import class_balanced_subset
from keras_aim.probing.label_efficiency import label_efficiency
from keras_aim.probing.label_efficiency import logistic_regression_scores
from keras_aim.probing.metrics import check_labels
from keras_aim.probing.metrics import classification_metrics
from keras_aim.probing.metrics import predict_logits
from keras_aim.probing.probes import compile_probe
from keras_aim.probing.probes import pixel_baseline
from keras_aim.probing.probes import probe_accuracy
from keras_aim.probing.probes import probe_optimizer
from keras_aim.probing.probes import train_probe
from keras_aim.probing.repeated import FeatureProbe
from keras_aim.probing.repeated import RepeatedProbe

__all__ = [
    "IN_MEMORY_LIMIT_BYTES",
    "LABELS_PER_CLASS",
    "FeatureProbe",
    "IndexedBatches",
    "RepeatedProbe",
    "block_features",
    "check_labels",
    "class_balanced_subset",
    "classification_metrics",
    "compile_probe",
    "feature_model",
    "knn_metrics",
    "knn_votes",
    "label_efficiency",
    "logistic_regression_scores",
    "pixel_baseline",
    "predict_logits",
    "probe_accuracy",
    "probe_optimizer",
    "train_classifier",
    "train_probe",
]
