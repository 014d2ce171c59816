"""Probing, fine-tuning and evaluating AIM backbones.

- `block_features`: the averaged raw outputs of chosen blocks (or the final
  tokens), computed once over a labelled set, in memory or in a `.npy`
  file on disk for large sets.
- `train_probe`: an attentive (the release's head) or linear probe on a
  frozen trunk. With `cache_features=True` (frozen trunk, no augmentation)
  the features are computed once and only the head is trained on them; the
  uncached path runs the trunk every step. Both see the same batches in
  the same order and start from the same head, so they reach the same
  accuracy for the same seed.
- `train_classifier`: fine-tuning (full, layer-wise learning-rate decay, or
  LoRA) of a whole `AIMImageClassifier`.
- `classification_metrics`, `predict_logits`: top-1, top-5 and the
  confusion matrix.
"""

import math
import os

import keras
import numpy as np

from keras_aim import optimizers
from keras_aim.layers.attentive_probe import average_features
from keras_aim.models.classifier import AIMImageClassifier
from keras_aim.validation import positive_int

# Above this many bytes, features go to a `.npy` file on disk.
IN_MEMORY_LIMIT_BYTES = 4 * 1024**3


class IndexedBatches(keras.utils.PyDataset):
    """Batches of in-memory arrays, in a seeded order that changes per epoch.

    Epoch `e` visits the examples in `RandomState((seed, e)).permutation`,
    the same order for any array with the same length, so a head trained on
    cached features and a classifier trained on the images see the same
    batches.
    """

    def __init__(self, x, y, batch_size, seed=0, shuffle=True):
        super().__init__()
        if len(x) != len(y):
            raise ValueError(
                f"Got {len(x)} inputs but {len(y)} labels; they must match."
            )
        if not len(y):
            raise ValueError("Cannot train on an empty set (0 examples).")
        self.x, self.y = x, np.asarray(y)
        self.batch_size = positive_int(batch_size, "batch_size")
        self.seed = int(seed)
        self.shuffle = shuffle
        self.epoch = 0
        self._order = self._make_order()

    def _make_order(self):
        if not self.shuffle:
            return np.arange(len(self.y))
        rng = np.random.RandomState([self.seed, self.epoch])
        return rng.permutation(len(self.y))

    def __len__(self):
        return math.ceil(len(self.y) / self.batch_size)

    def __getitem__(self, index):
        chosen = np.sort(
            self._order[index * self.batch_size : (index + 1) * self.batch_size]
        )
        return np.asarray(self.x[chosen]), self.y[chosen]

    def on_epoch_end(self):
        self.epoch += 1
        self._order = self._make_order()


def feature_model(backbone, layers, pool=None):
    """A model from images to averaged block outputs (`layers="final"`: the
    final-LayerNorm tokens), mean-pooled over tokens when `pool="mean"`."""
    if pool not in (None, "none", "mean"):
        raise ValueError(f"`pool` must be 'none' or 'mean'; got {pool!r}.")
    images = keras.Input(shape=backbone.image_shape, name="images")
    if layers == "final":
        features = backbone(images)
    else:
        features = average_features(backbone.extract_features(images, layers))
    if pool == "mean":
        features = keras.ops.mean(features, axis=1)
    return keras.Model(images, features)


def block_features(
    backbone,
    data,
    layers,
    batch_size=64,
    pool=None,
    cache_path=None,
    verbose=1,
):
    """Computes features of a labelled set once.

    Args:
        backbone: an `AIMBackbone`.
        data: a `keras_aim.data.LabelledImages`.
        layers: block indices (their outputs are averaged) or `"final"`.
        batch_size: int, images per forward pass.
        pool: `None` (all tokens) or `"mean"`.
        cache_path: a `.npy` file to hold the features on disk (a memory
            map); by default they stay in memory unless larger than
            `IN_MEMORY_LIMIT_BYTES`, then a `.npy` beside the working folder.
        verbose: int, 1 shows a progress bar.

    Returns:
        `(features, labels)`: float32 `(N, T, D)` (or `(N, D)` pooled) and
        int32 `(N,)`; `N` drops files that failed to decode.
    """
    model = feature_model(backbone, layers, pool)
    spec = model.output
    shape = tuple(int(d) for d in spec.shape[1:] if d is not None)
    if len(shape) != len(spec.shape) - 1:
        probe = model.predict_on_batch(
            np.asarray(next(iter(data.batches(1)))[0])
        )  # resolution-free backbones: read the shape off one image
        shape = tuple(probe.shape[1:])
    total = data.num_examples
    num_bytes = total * int(np.prod(shape)) * 4
    if cache_path is None and num_bytes > IN_MEMORY_LIMIT_BYTES:
        cache_path = os.path.abspath("features_cache.npy")
    if cache_path is not None:
        features = np.lib.format.open_memmap(
            cache_path, mode="w+", dtype="float32", shape=(total, *shape)
        )
    else:
        features = np.empty((total, *shape), "float32")
    labels = np.empty((total,), "int32")
    progress = keras.utils.Progbar(total, verbose=verbose) if verbose else None
    count = 0
    for images, batch_labels in data.batches(batch_size):
        out = np.asarray(model.predict_on_batch(np.asarray(images)), "float32")
        features[count : count + len(out)] = out
        labels[count : count + len(out)] = np.asarray(batch_labels)
        count += len(out)
        if progress is not None:
            progress.update(count)
    data.check_decoded(count)
    if not count:
        raise ValueError(f"No image of {data.source!r} could be read.")
    return features[:count], labels[:count]


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
        image_converter: stored with the classifier (its preset).
        verbose: int.

    Returns:
        An `AIMImageClassifier` whose head was trained.
    """
    num_classes = num_classes or train.num_classes
    keras.utils.set_random_seed(seed)
    classifier = AIMImageClassifier(
        backbone,
        num_classes=num_classes,
        probe_layers=probe_layers,
        probe=probe,
        image_converter=image_converter,
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
    batches = IndexedBatches(x, y, batch_size, seed=seed)
    compile_probe(model, epochs * len(batches), learning_rate, weight_decay)
    model.fit(batches, epochs=epochs, verbose=verbose, shuffle=False)
    return classifier


def train_classifier(
    classifier,
    train,
    epochs=10,
    batch_size=32,
    learning_rate=1e-4,
    weight_decay=0.05,
    layer_decay=None,
    seed=0,
    verbose=1,
):
    """Fine-tunes a whole classifier (whatever of it is trainable).

    With `layer_decay` in (0, 1), block `i` of `L` learns at
    `learning_rate * layer_decay ** (L - i)` and the embeddings at
    `layer_decay ** (L + 1)` (`optimizers.LayerDecayAdamW`).
    """
    x, y = train.to_arrays()
    check_labels(y, classifier.num_classes)
    # Weights off the classifier's path get no gradient: the final
    # LayerNorm (the probe reads raw block outputs) and later blocks.
    backbone = classifier.backbone
    backbone.post_trunk_norm.trainable = False
    for block in backbone.transformer_blocks[
        max(classifier.probe_layers) + 1 :
    ]:
        block.trainable = False
    batches = IndexedBatches(x, y, positive_int(batch_size, "batch_size"), seed)
    total = positive_int(epochs, "epochs") * len(batches)
    optimizer = None
    if layer_decay is not None and layer_decay != 1.0:
        optimizer = optimizers.layer_decay_optimizer(
            classifier.backbone.num_layers,
            layer_decay,
            total_steps=total,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
        )
    compile_probe(classifier, total, learning_rate, weight_decay, optimizer)
    classifier.fit(batches, epochs=epochs, verbose=verbose, shuffle=False)
    return classifier


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
    """
    logits = np.asarray(logits, "float64")
    labels = np.asarray(labels).astype("int64")
    num_classes = num_classes or logits.shape[-1]
    check_labels(labels, num_classes)
    if not len(labels):
        raise ValueError("No examples to evaluate.")
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
    from keras_aim.preprocessing import default_image_converter

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
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from keras_aim.data.labelled import labelled_images

    train = labelled_images(source, "train", image_size=image_size, seed=seed)
    test = labelled_images(source, "test", image_size=image_size, seed=seed)
    (x, y), (tx, ty) = train.to_arrays(), test.to_arrays()
    scaler = StandardScaler().fit(x.reshape(len(x), -1))
    model = LogisticRegression(max_iter=2000, C=0.1)
    model.fit(scaler.transform(x.reshape(len(x), -1)), y)
    predictions = model.predict(scaler.transform(tx.reshape(len(tx), -1)))
    return float(np.mean(predictions == ty))
