"""Probing one backbone many times (e.g. at every checkpoint of a run).

`probing.probe_accuracy` builds and compiles a new classifier, feature
model and head for each call: right for one probe, but a study that
probes every checkpoint of many runs would spend most of its time
compiling. `RepeatedProbe` builds them once per backbone; each call reads
the backbone's current weights, resets the head and its optimizer to the
same starting point and retrains it on freshly computed features, so it
gives what a fresh `probe_accuracy` with the same settings gives.

`FeatureProbe` does the same for heads trained on features computed once
(the trunks of a comparison, the random draws of few-shot labels): one
compiled head per training-set size, reset before every call.
"""

import keras
import numpy as np

from keras_aim.layers.attentive_probe import AIMAttentivePooling
from keras_aim.layers.linear_probe import AIMLinearProbe
from keras_aim.models.aim.aim_image_classifier import AIMImageClassifier
from keras_aim.probing.divergence import fit_or_diverge
from keras_aim.probing.features import IndexedBatches
from keras_aim.probing.features import feature_model
from keras_aim.probing.metrics import check_labels
from keras_aim.probing.metrics import classification_metrics
from keras_aim.probing.probes import compile_probe
from keras_aim.utils.validation import positive_int


class RepeatedProbe:
    """A frozen-trunk probe that can be rerun on the backbone's current weights.

    Args:
        backbone: an `AIMBackbone` (frozen: `trainable=False`).
        train, test: `keras_aim.data.LabelledImages` splits.
        probe, probe_layers, epochs, batch_size, learning_rate,
            weight_decay, seed: as for `probing.train_probe`.

    Example:

    ```python
    probe = RepeatedProbe(backbone, train, test, epochs=60)
    for path in checkpoints:
        manager.restore(pretrainer, path)
        print(probe()["top1"])
    ```
    """

    def __init__(
        self,
        backbone,
        train,
        test,
        probe="attentive",
        probe_layers="last",
        epochs=30,
        batch_size=64,
        learning_rate=1e-3,
        weight_decay=0.05,
        seed=0,
    ):
        self.epochs = positive_int(epochs, "epochs")
        self.batch_size = positive_int(batch_size, "batch_size")
        self.seed = seed
        self.num_classes = train.num_classes
        keras.utils.set_random_seed(seed)  # the head's initial weights
        classifier = AIMImageClassifier(
            backbone,
            num_classes=self.num_classes,
            probe_layers=probe_layers,
            probe=probe,
        )
        backbone.trainable = False
        self.features = feature_model(backbone, classifier.probe_layers)
        self.train_images, self.train_labels = train.to_arrays()
        self.test_images, self.test_labels = test.to_arrays()
        check_labels(self.train_labels, self.num_classes)
        check_labels(self.test_labels, self.num_classes, "test labels")
        shape = tuple(int(d) for d in self.features.output.shape[1:])
        self.head = keras.Sequential(
            [keras.Input(shape=shape), classifier.probe_head]
        )
        self.initial = [np.array(v) for v in self.head.weights]
        steps = self.epochs * len(
            IndexedBatches(self.train_images, self.train_labels, batch_size)
        )
        compile_probe(self.head, steps, learning_rate, weight_decay)
        # Built now so that its fresh state (step 0, zero moments) can be
        # put back before every call.
        self.head.optimizer.build(self.head.trainable_variables)
        self.initial_optimizer = [
            np.array(v) for v in self.head.optimizer.variables
        ]

    def _in_batches(self, model, x):
        return _predict_in_batches(model, x, self.batch_size)

    def __call__(self):
        """Probes the current weights; returns `classification_metrics`."""
        x = self._in_batches(self.features, self.train_images)
        test = self._in_batches(self.features, self.test_images)
        for variable, value in zip(self.head.weights, self.initial):
            variable.assign(value)
        optimizer_variables = self.head.optimizer.variables
        for variable, value in zip(optimizer_variables, self.initial_optimizer):
            variable.assign(value)
        batches = IndexedBatches(
            x, self.train_labels, self.batch_size, self.seed
        )
        fit_or_diverge(self.head, batches, self.epochs)
        logits = self._in_batches(self.head, test)
        return classification_metrics(
            logits, self.test_labels, self.num_classes
        )


def _predict_in_batches(model, x, batch_size):
    """`model` over `x` in batches of one size (the last one padded), so
    each compiled function sees a single shape."""
    out = []
    for start in range(0, len(x), batch_size):
        chunk = np.asarray(x[start : start + batch_size])
        count = len(chunk)
        if count < batch_size:
            pad = np.repeat(chunk[-1:], batch_size - count, axis=0)
            chunk = np.concatenate([chunk, pad])
        out.append(np.asarray(model.predict_on_batch(chunk))[:count])
    return np.concatenate(out).astype("float32")


class FeatureProbe:
    """A probe head trained again and again on cached block features.

    Every call trains the head from the same initial weights (drawn once,
    seeded) with `probing.train_probe`'s recipe on cached features (AdamW,
    5% warm-up, cosine decay; the batches of `IndexedBatches(x, y,
    batch_size, seed)`). The initial weights are the head's own draw, not
    those of an `AIMImageClassifier` built with the same seed, so a call
    matches a fresh `train_probe` in recipe, not bit for bit. The compiled
    head is kept per training-set size, and only its weights and optimizer
    state are reset: comparing trunks with features of one shape, or
    several draws of few labels, compiles once per size.

    Args:
        feature_shape: `(tokens, hidden_dim)` of one example's features.
        num_classes: int.
        num_heads: int, attention heads of the attentive head (the trunk's).
        probe: `"attentive"` or `"linear"`.
        epochs, batch_size, learning_rate, weight_decay, seed: as for
            `probing.train_probe`.

    Example:

    ```python
    probe = FeatureProbe(x.shape[1:], num_classes=10, num_heads=4)
    logits = probe(x[subset], y[subset], test_x)   # (len(test_x), 10)
    ```
    """

    def __init__(
        self,
        feature_shape,
        num_classes,
        num_heads,
        probe="attentive",
        epochs=30,
        batch_size=64,
        learning_rate=1e-3,
        weight_decay=0.05,
        seed=0,
    ):
        shape = tuple(feature_shape)
        if len(shape) != 2 or not all(
            isinstance(d, (int, np.integer)) and d > 0 for d in shape
        ):
            raise ValueError(
                "`feature_shape` must be (tokens, hidden_dim), positive "
                f"integers; got feature_shape={feature_shape!r}."
            )
        if probe not in ("attentive", "linear"):
            raise ValueError(
                f"`probe` must be 'attentive' or 'linear'; got probe={probe!r}."
            )
        self.feature_shape = tuple(int(d) for d in shape)
        self.num_classes = positive_int(num_classes, "num_classes")
        self.num_heads = positive_int(num_heads, "num_heads")
        self.probe = probe
        self.epochs = positive_int(epochs, "epochs")
        self.batch_size = positive_int(batch_size, "batch_size")
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.seed = seed
        self.initial = None
        self._heads = {}  # training-set size -> (head, optimizer state)

    def _build(self, num_train):
        keras.utils.set_random_seed(self.seed)  # the head's initial weights
        hidden_dim = self.feature_shape[-1]
        if self.probe == "attentive":
            layer = AIMAttentivePooling(
                hidden_dim, self.num_heads, self.num_classes, name="probe_head"
            )
        else:
            layer = AIMLinearProbe(
                hidden_dim, self.num_classes, name="probe_head"
            )
        head = keras.Sequential([keras.Input(shape=self.feature_shape), layer])
        if self.initial is None:
            self.initial = [np.array(v) for v in head.weights]
        steps = self.epochs * -(-num_train // self.batch_size)
        compile_probe(head, steps, self.learning_rate, self.weight_decay)
        head.optimizer.build(head.trainable_variables)
        state = [np.array(v) for v in head.optimizer.variables]
        return head, state

    def __call__(self, x, y, test_x):
        """Trains the head on `(x, y)`; returns float32 logits of `test_x`.

        Raises `TrainingDivergedError` (as `train_probe` does) when the loss
        or a head weight becomes NaN or infinite.

        Args:
            x: `(N, tokens, hidden_dim)` training features.
            y: `(N,)` labels in `[0, num_classes)`.
            test_x: `(M, tokens, hidden_dim)` features to classify.
        """
        for name, value in (("x", x), ("test_x", test_x)):
            if tuple(np.shape(value)[1:]) != self.feature_shape:
                raise ValueError(
                    f"`{name}` must have features of shape "
                    f"{self.feature_shape}; got {np.shape(value)}."
                )
        check_labels(y, self.num_classes)
        if len(x) not in self._heads:
            self._heads[len(x)] = self._build(len(x))
        head, state = self._heads[len(x)]
        for variable, value in zip(head.weights, self.initial):
            variable.assign(value)
        for variable, value in zip(head.optimizer.variables, state):
            variable.assign(value)
        batches = IndexedBatches(x, y, self.batch_size, self.seed)
        fit_or_diverge(head, batches, self.epochs)
        return _predict_in_batches(head, test_x, 256)
