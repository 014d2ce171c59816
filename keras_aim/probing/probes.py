"""Attentive (the release's head) and linear probes on a frozen trunk.

With `cache_features=True` (frozen trunk, no augmentation) the features are
computed once and only the head is trained on them; the uncached path runs
the trunk every step. Both see the same batches in the same order and start
from the same head, so they reach the same accuracy for the same seed."""

import keras
import numpy as np

from keras_aim import optimizers
from keras_aim.models.aim.aim_image_classifier import AIMImageClassifier
from keras_aim.probing.divergence import fit_or_diverge
from keras_aim.probing.features import IndexedBatches
from keras_aim.probing.features import block_features
from keras_aim.probing.label_efficiency import check_labels_per_class
from keras_aim.probing.label_efficiency import class_balanced_subset
from keras_aim.probing.metrics import check_labels
from keras_aim.probing.metrics import classification_metrics
from keras_aim.probing.metrics import predict_logits
from keras_aim.utils.validation import positive_int


def probe_optimizer(total_steps, learning_rate, weight_decay=0.05):
    """AdamW with 5% warm-up and cosine decay (no decay on norms, query)."""
    return optimizers.pretraining_optimizer(
        total_steps,
        batch_size=1,
        base_learning_rate=learning_rate,
        base_batch_size=1,
        warmup_fraction=0.05,
        weight_decay=weight_decay,
    )


def compile_probe(
    model, total_steps, learning_rate, weight_decay, optimizer=None
):
    """Compiles a probe or classifier the way `train_probe` does.

    AdamW with `probe_optimizer`'s schedule over `total_steps` (or the
    given `optimizer`), sparse categorical cross-entropy on logits and
    accuracy.
    """
    model.compile(
        optimizer=optimizer
        or probe_optimizer(total_steps, learning_rate, weight_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def train_probe(
    backbone,
    train,
    num_classes=None,
    probe="attentive",
    probe_layers="last",
    epochs=30,
    batch_size=64,
    learning_rate=1e-3,
    weight_decay=0.05,
    seed=0,
    cache_features=True,
    cache_path=None,
    image_converter=None,
    verbose=1,
    cache_dir=None,
    labels_per_class=None,
):
    """Trains a probe head on a frozen trunk; returns the classifier.

    Args:
        backbone: an `AIMBackbone` (frozen here: `trainable=False`).
        train: a `keras_aim.data.LabelledImages` (the training split).
        num_classes: int, defaults to `train.num_classes`.
        probe: `"attentive"` or `"linear"`.
        probe_layers: as for `AIMImageClassifier`.
        epochs, batch_size, learning_rate, weight_decay: the recipe (AdamW,
            5% warm-up, cosine decay).
        seed: int, seeds the head's initial weights and the batch order.
        cache_features: bool, compute the block features once and train
            the head on them (same result as `False`, much faster).
        cache_path: optional `.npy` file for large feature sets.
        cache_dir: the folder of the temporary feature cache of a large
            set (e.g. the run's output folder); defaults to a fresh
            temporary folder. The file is removed however the run ends.
        image_converter: stored with the classifier (its preset).
        verbose: int.
        labels_per_class: int, train on that many examples of every class
            (`class_balanced_subset(labels, labels_per_class, seed)`);
            `None` or 0: every example. The features of the whole split
            are computed (cached) first, then the subset is taken.

    Returns:
        An `AIMImageClassifier` whose head was trained, named with
        `train.class_names` (when `num_classes` is theirs).

    Raises:
        TrainingDivergedError: the loss or a head weight became NaN or
            infinite (training stops there).
    """
    num_classes = num_classes or train.num_classes
    keras.utils.set_random_seed(seed)
    classifier = AIMImageClassifier(
        backbone,
        num_classes=num_classes,
        probe_layers=probe_layers,
        probe=probe,
        image_converter=image_converter,
        # Saved with the preset: evaluation maps folders by these names.
        class_names=(
            train.class_names if num_classes == train.num_classes else None
        ),
    )
    backbone.trainable = False
    batch_size = positive_int(batch_size, "batch_size")
    epochs = positive_int(epochs, "epochs")
    if cache_features:
        x, y = block_features(
            backbone,
            train,
            classifier.probe_layers,
            batch_size=max(batch_size, 64),
            cache_path=cache_path,
            cache_dir=cache_dir,
            verbose=verbose,
        )
        # The classifier's own head, trained on the cached features: its
        # variables are shared, so the classifier is trained too.
        model = keras.Sequential(
            [keras.Input(shape=x.shape[1:]), classifier.probe_head]
        )
    else:
        x, y = train.to_arrays()
        model = classifier
    check_labels(y, num_classes)
    if check_labels_per_class(labels_per_class) is not None:
        subset = class_balanced_subset(y, labels_per_class, seed, num_classes)
        x, y = x[subset], y[subset]
    batches = IndexedBatches(x, y, batch_size, seed=seed)
    compile_probe(model, epochs * len(batches), learning_rate, weight_decay)
    fit_or_diverge(model, batches, epochs, verbose)
    return classifier


def probe_accuracy(
    backbone,
    source,
    probe="attentive",
    probe_layers="last",
    epochs=30,
    batch_size=64,
    learning_rate=1e-3,
    seed=0,
    image_converter=None,
    verbose=0,
):
    """Trains a probe on `source`'s train split and tests it.

    Returns:
        The `classification_metrics` of the test split, plus `num_train`,
        `class_names` and the trained `classifier`.
    """
    from keras_aim.data.labelled import labelled_images
    from keras_aim.models.aim.aim_image_converter import default_image_converter

    converter = image_converter or default_image_converter(backbone.image_shape)
    train = labelled_images(
        source, "train", image_converter=converter, seed=seed
    )
    test = labelled_images(source, "test", image_converter=converter, seed=seed)
    classifier = train_probe(
        backbone,
        train,
        probe=probe,
        probe_layers=probe_layers,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        seed=seed,
        image_converter=converter,
        verbose=verbose,
    )
    logits, labels = predict_logits(classifier, test, batch_size)
    metrics = classification_metrics(logits, labels, train.num_classes)
    metrics.update(
        num_train=train.num_examples - len(train.skipped),
        class_names=train.class_names,
        classifier=classifier,
    )
    return metrics


def pixel_baseline(source, image_size, seed=0):
    """Test top-1 of a logistic regression on the raw (normalised) pixels.

    The honest baseline for small-scale probes: what the pixels alone give.
    Needs scikit-learn; built-in and in-memory sets only.
    """
    from keras_aim.data.labelled import labelled_images
    from keras_aim.probing.label_efficiency import logistic_regression_scores

    train = labelled_images(source, "train", image_size=image_size, seed=seed)
    test = labelled_images(source, "test", image_size=image_size, seed=seed)
    (x, y), (tx, ty) = train.to_arrays(), test.to_arrays()
    scores = logistic_regression_scores(x, y, tx, train.num_classes)
    return float(np.mean(np.argmax(scores, axis=-1) == ty))
