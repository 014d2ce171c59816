"""Probing one backbone many times (e.g. at every checkpoint of a run).

`probing.probe_accuracy` builds and compiles a new classifier, feature
model and head for each call: right for one probe, but a study that
probes every checkpoint of many runs would spend most of its time
compiling. `RepeatedProbe` builds them once per backbone; each call reads
the backbone's current weights, resets the head and its optimizer to the
same starting point and retrains it on freshly computed features, so it
gives what a fresh `probe_accuracy` with the same settings gives.
"""

import keras
import numpy as np

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
        """`model` over `x` in batches of one size (the last one padded), so
        each compiled function sees a single shape."""
        out = []
        for start in range(0, len(x), self.batch_size):
            chunk = np.asarray(x[start : start + self.batch_size])
            count = len(chunk)
            if count < self.batch_size:
                pad = np.repeat(chunk[-1:], self.batch_size - count, axis=0)
                chunk = np.concatenate([chunk, pad])
            out.append(np.asarray(model.predict_on_batch(chunk))[:count])
        return np.concatenate(out).astype("float32")

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
