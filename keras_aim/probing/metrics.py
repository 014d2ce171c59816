"""Classification metrics and label checks of the probes and fine-tuning."""

import keras
import numpy as np


def check_labels(labels, num_classes, what="labels"):
    """Refuses labels outside `[0, num_classes)`, naming the first few."""
    labels = np.asarray(labels)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if len(bad):
        raise ValueError(
            f"{len(bad)} {what} are outside [0, {num_classes}) (the model "
            f"has {num_classes} classes): e.g. {labels[bad[:5]].tolist()} at "
            f"positions {bad[:5].tolist()}."
        )


def predict_logits(classifier, data, batch_size=64, verbose=0):
    """`(logits, labels)` of a classifier over a `LabelledImages` set."""
    logits, labels = [], []
    progress = (
        keras.utils.Progbar(data.num_examples, verbose=verbose)
        if verbose
        else None
    )
    for images, batch_labels in data.batches(batch_size):
        logits.append(
            np.asarray(classifier.predict_on_batch(np.asarray(images)))
        )
        labels.append(np.asarray(batch_labels))
        if progress is not None:
            progress.add(len(labels[-1]))
    count = sum(len(b) for b in labels)
    data.check_decoded(count)
    if not count:
        raise ValueError(f"No image of {data.source!r} could be read.")
    return np.concatenate(logits).astype("float32"), np.concatenate(labels)


def classification_metrics(logits, labels, num_classes=None):
    """Top-1, top-5 (top-k for fewer classes) and the confusion matrix.

    Returns:
        `{"top1", "top5", "num_test", "confusion"}`, accuracies in [0, 1];
        `confusion[i, j]` counts examples of class `i` predicted as `j`.

    Raises:
        ValueError: labels out of range, no examples, or logits that are
            NaN or infinite (whose argmax would be a silent wrong answer).
    """
    logits = np.asarray(logits, "float64")
    labels = np.asarray(labels).astype("int64")
    num_classes = num_classes or logits.shape[-1]
    check_labels(labels, num_classes)
    if not len(labels):
        raise ValueError("No examples to evaluate.")
    bad = ~np.isfinite(logits).all(axis=-1)
    if bad.any():
        # argmax of NaN logits is class 0: a silent, wrong accuracy.
        raise ValueError(
            f"The classifier's logits are NaN or infinite for {bad.sum()} of "
            f"{len(bad)} images: its weights are not finite (a diverged or "
            "damaged model); no accuracy can be computed."
        )
    k = min(5, logits.shape[-1])
    top = np.argsort(-logits, axis=-1, kind="stable")[:, :k]
    top1 = float(np.mean(top[:, 0] == labels))
    top5 = float(np.mean((top == labels[:, None]).any(axis=-1)))
    confusion = np.zeros((num_classes, num_classes), "int64")
    np.add.at(confusion, (labels, top[:, 0]), 1)
    return {
        "top1": top1,
        "top5": top5,
        "num_test": int(len(labels)),
        "confusion": confusion,
    }
