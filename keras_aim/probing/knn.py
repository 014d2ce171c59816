"""k-nearest-neighbour classification on frozen features, as DINO does it.

Features are L2-normalised (`x / max(||x||, 1e-12)`), so the similarity is
the cosine. Each test example takes its `k` most similar training examples
(20 by default) and each neighbour votes for its label with weight
`exp(similarity / temperature)` (0.07 by default); the classes ranked by
their summed votes give top-1 and top-5 (Caron et al., "Emerging
Properties in Self-Supervised Vision Transformers", ICCV 2021).

Ties are broken the same way every time:
- neighbours: among training examples with the same similarity to a test
  example (as computed in float32), the lower training index is taken
  first;
- classes: among classes with equal summed votes, the lower class index
  ranks first (classes with no vote have 0 and rank after every voted
  class).

The similarities are computed a chunk of test rows at a time, so memory
stays near `max_chunk_bytes` whatever the size of the test set. The chunk
height changes only float32 rounding (BLAS may sum a row's products in
another order, ~1e-7 relative), not the neighbours unless two of them are
that close.
"""

import math

import numpy as np

from keras_aim.probing.metrics import check_labels
from keras_aim.probing.metrics import classification_metrics
from keras_aim.utils.validation import positive_int

DEFAULT_K = 20
DEFAULT_TEMPERATURE = 0.07
# About 25 bytes per (test row, training example) pair are held at once:
# the float32 similarities, two masks and an index.
_BYTES_PER_PAIR = 25


def l2_normalise(features, what="features"):
    """`features` flattened per example, float32, each row of unit norm.

    Rows of zeros stay zero (their similarity to anything is 0).
    """
    x = np.asarray(features)
    if x.ndim < 2 or not x.shape[0] or not np.prod(x.shape[1:]):
        raise ValueError(
            f"`{what}` must be an array (num_examples, ...) with at least "
            f"one example and one feature; got shape {x.shape}."
        )
    if x.dtype.kind not in "fiu" and x.dtype.name != "bfloat16":
        raise ValueError(
            f"`{what}` must be numbers; got dtype {x.dtype} (shape {x.shape})."
        )
    x = x.reshape(len(x), -1).astype("float64")
    if not np.isfinite(x).all():
        raise ValueError(
            f"`{what}` has {int(np.sum(~np.isfinite(x)))} NaN or infinite "
            "values."
        )
    norms = np.sqrt(np.sum(x * x, axis=1, keepdims=True))
    return (x / np.maximum(norms, 1e-12)).astype("float32")


def check_temperature(temperature):
    """`temperature` as a float; a `ValueError` unless positive and finite."""
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float, np.floating, np.integer))
        or not math.isfinite(temperature)
        or temperature <= 0
    ):
        raise ValueError(
            "`temperature` must be a positive finite number; got "
            f"temperature={temperature!r}."
        )
    return float(temperature)


def _labels(train_labels, num_train, num_classes):
    labels = np.asarray(train_labels)
    if labels.ndim != 1 or len(labels) != num_train:
        raise ValueError(
            f"`train_labels` must have one label per training example "
            f"({num_train}); got shape {labels.shape}."
        )
    if labels.dtype.kind not in "iu":
        raise ValueError(
            f"`train_labels` must be integers; got dtype {labels.dtype}."
        )
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if len(labels) else 1
    num_classes = positive_int(num_classes, "num_classes")
    check_labels(labels, num_classes, "train labels")
    return labels.astype("int64"), num_classes


def _neighbours(similarities, k):
    """`(rows, columns)` of each row's `k` largest entries, lower column
    first among equal values; `k` per row, in row-major order."""
    num = similarities.shape[1]
    if k == num:
        rows = np.repeat(np.arange(len(similarities)), num)
        return rows, np.tile(np.arange(num), len(similarities))
    kth = np.partition(similarities, num - k, axis=1)[:, num - k, None]
    greater = similarities > kth
    equal = similarities == kth
    need = k - greater.sum(axis=1, keepdims=True)
    chosen = greater | (equal & (np.cumsum(equal, axis=1) <= need))
    return np.nonzero(chosen)


def knn_votes(
    train_features,
    train_labels,
    test_features,
    num_classes=None,
    k=DEFAULT_K,
    temperature=DEFAULT_TEMPERATURE,
    max_chunk_bytes=64 * 1024**2,
):
    """Temperature-weighted k-NN votes of each test example (DINO's k-NN).

    Args:
        train_features: `(N, ...)` features of the labelled examples (the
            memory bank), flattened per example.
        train_labels: `(N,)` integer labels.
        test_features: `(M, ...)` features to classify, same size per
            example as `train_features`.
        num_classes: int; defaults to `max(train_labels) + 1`.
        k: int, neighbours per test example; capped at `N` (a few-shot set
            of 10 examples votes with all 10). Defaults to 20.
        temperature: positive float; a neighbour at cosine similarity `s`
            votes `exp(s / temperature)`. Defaults to 0.07.
        max_chunk_bytes: int, the memory the similarities of one chunk of
            test rows may take (at least one row is processed at a time).

    Returns:
        float64 `(M, num_classes)` summed votes; ranked, they give the
        predictions (see the module doc for ties).

    Example:

    >>> bank = np.eye(3, dtype="float32")
    >>> votes = knn_votes(bank, [0, 1, 2], [[1.0, 0.2, 0.0]], k=2)
    >>> int(votes.argmax())
    0
    """
    train = l2_normalise(train_features, "train_features")
    test = l2_normalise(test_features, "test_features")
    if train.shape[1] != test.shape[1]:
        raise ValueError(
            "`train_features` and `test_features` must have the same size "
            f"per example; got {train.shape[1]} and {test.shape[1]} values."
        )
    labels, num_classes = _labels(train_labels, len(train), num_classes)
    k = min(positive_int(k, "k"), len(train))
    temperature = check_temperature(temperature)
    budget = positive_int(max_chunk_bytes, "max_chunk_bytes")
    rows = max(1, budget // (_BYTES_PER_PAIR * len(train)))
    votes = np.zeros((len(test), num_classes), "float64")
    for start in range(0, len(test), rows):
        similarities = test[start : start + rows] @ train.T
        row, column = _neighbours(similarities, k)
        weights = np.exp(
            similarities[row, column].astype("float64") / temperature
        )
        np.add.at(votes, (row + start, labels[column]), weights)
    return votes


def knn_metrics(
    train_features,
    train_labels,
    test_features,
    test_labels,
    num_classes=None,
    k=DEFAULT_K,
    temperature=DEFAULT_TEMPERATURE,
    max_chunk_bytes=64 * 1024**2,
):
    """k-NN top-1, top-5 and confusion matrix on frozen features.

    Args:
        as for `knn_votes`, plus `test_labels` `(M,)`.

    Returns:
        `classification_metrics` (`top1`, `top5`, `num_test`, `confusion`)
        plus `num_train`, `k` (as used, after the cap) and `temperature`.
    """
    if num_classes is None:
        num_classes = int(max(np.max(train_labels), np.max(test_labels))) + 1
    votes = knn_votes(
        train_features,
        train_labels,
        test_features,
        num_classes,
        k,
        temperature,
        max_chunk_bytes,
    )
    test_labels = np.asarray(test_labels)
    if test_labels.shape != (len(votes),):
        raise ValueError(
            f"`test_labels` must have one label per test example "
            f"({len(votes)}); got shape {test_labels.shape}."
        )
    metrics = classification_metrics(votes, test_labels, num_classes)
    metrics.update(
        num_train=int(len(np.asarray(train_labels))),
        k=min(int(k), len(np.asarray(train_labels))),
        temperature=float(temperature),
    )
    return metrics
