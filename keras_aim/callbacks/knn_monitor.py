"""`KNNMonitor`: k-NN top-1 of a held-out split while a trunk trains."""

import csv
import os

import keras
import numpy as np

from keras_aim.callbacks.step_logger import optimizer_step
from keras_aim.models.aim.aim_image_classifier import resolve_probe_layers
from keras_aim.probing.features import feature_model
from keras_aim.probing.knn import DEFAULT_K
from keras_aim.probing.knn import DEFAULT_TEMPERATURE
from keras_aim.probing.knn import check_temperature
from keras_aim.probing.knn import knn_metrics
from keras_aim.utils.validation import positive_int

# The file and columns the pre-training example writes (beside log.csv,
# whose columns stay as they are).
KNN_LOG_FILE = "knn.csv"
KNN_FIELDS = ("step", "knn_top1", "knn_top5")


def _read_rows(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return [
            row
            for row in csv.DictReader(f)
            if row.get("step", "").strip().lstrip("-").isdigit()
        ]


class KNNMonitor(keras.callbacks.Callback):
    """Logs the k-NN accuracy of the trunk's features every `every` steps.

    At the start of training and then at the first epoch end (one logging
    window of `keras_aim.training.train`) at or after each multiple of
    `every` optimizer steps, the trunk's features of `train` (the memory
    bank) and `test` (held out) are computed with the current weights: the
    averaged outputs of `layers`, mean-pooled over the tokens. Then
    `probing.knn_metrics` (cosine, `k` neighbours, votes `exp(sim /
    temperature)`) classifies the test examples. Each evaluation appends
    `step, knn_top1, knn_top5` to `csv_path`.

    A resumed run keeps the rows up to its start step and drops the rest,
    as `log.csv` does; a run starting at step 0 starts the file over.

    Args:
        train: `(images, labels)`, the labelled bank (normalised images).
        test: `(images, labels)`, the held-out queries.
        every: int, optimizer steps between evaluations.
        csv_path: the CSV to write, or `None` (results in `history`).
        layers: `"last"`, `"best"`, `"final"` (the final-LayerNorm tokens)
            or block indices, as for the probes. Defaults to `"last"`.
        k: int, neighbours. Defaults to 20.
        temperature: float, vote temperature. Defaults to 0.07.
        batch_size: int, images per forward pass. Defaults to 256.
        step_offset: int, the step the optimizer counter's zero stands for.
        verbose: int, 1 prints a line per evaluation.

    Example:

    ```python
    monitor = keras_aim.callbacks.KNNMonitor(
        (train_images, train_labels), (test_images, test_labels), every=100,
        csv_path="run/knn.csv")
    pretrainer.fit(dataset, epochs=40, steps_per_epoch=10, callbacks=[monitor])
    monitor.history   # {step: k-NN top-1}
    ```
    """

    def __init__(
        self,
        train,
        test,
        every,
        csv_path=None,
        layers="last",
        k=DEFAULT_K,
        temperature=DEFAULT_TEMPERATURE,
        batch_size=256,
        step_offset=0,
        verbose=0,
    ):
        super().__init__()
        self.train_images, self.train_labels = _split(train, "train")
        self.test_images, self.test_labels = _split(test, "test")
        if self.train_images.shape[1:] != self.test_images.shape[1:]:
            raise ValueError(
                "`train` and `test` images must have the same shape; got "
                f"{self.train_images.shape[1:]} and "
                f"{self.test_images.shape[1:]}."
            )
        self.every = positive_int(every, "every")
        if csv_path is not None and (
            not isinstance(csv_path, (str, os.PathLike)) or not str(csv_path)
        ):
            raise ValueError(
                f"`csv_path` must be a file path; got {csv_path!r}."
            )
        self.csv_path = None if csv_path is None else os.fspath(csv_path)
        self.layers = layers
        self.k = positive_int(k, "k")
        self.temperature = check_temperature(temperature)
        self.batch_size = positive_int(batch_size, "batch_size")
        self.step_offset = int(step_offset)
        self.verbose = verbose
        self.num_classes = (
            int(max(self.train_labels.max(), self.test_labels.max())) + 1
        )
        self.history = {}
        self._last = None
        self._features = None
        self._backbone = None

    def set_model(self, model):
        backbone = getattr(model, "backbone", model)
        if not hasattr(backbone, "extract_features"):
            raise ValueError(
                "KNNMonitor needs a keras_aim.AIMPretrainer or AIMBackbone "
                f"(a model with a backbone); got {type(model).__name__}."
            )
        super().set_model(model)
        if self._features is None or self._backbone is not backbone:
            self._backbone = backbone
            layers = self.layers
            if layers != "final":
                layers = resolve_probe_layers(layers, backbone)
            self._features = feature_model(backbone, layers, pool="mean")

    def _step(self):
        return optimizer_step(self.model) + self.step_offset

    def _embed(self, images):
        out = []
        size = self.batch_size
        for start in range(0, len(images), size):
            chunk = images[start : start + size]
            count = len(chunk)
            if count < size:  # one shape, one compiled function
                pad = np.repeat(chunk[-1:], size - count, axis=0)
                chunk = np.concatenate([chunk, pad])
            # float32: a mixed_bfloat16 trunk gives bfloat16 features.
            features = self._features.predict_on_batch(chunk)
            out.append(np.asarray(features, "float32")[:count])
        return np.concatenate(out)

    def evaluate(self):
        """k-NN metrics of the current weights (`knn_metrics`' dict)."""
        return knn_metrics(
            self._embed(self.train_images),
            self.train_labels,
            self._embed(self.test_images),
            self.test_labels,
            self.num_classes,
            self.k,
            self.temperature,
        )

    def _due(self, step):
        return (
            self._last is None or step // self.every > self._last // self.every
        )

    def _log(self, step):
        metrics = self.evaluate()
        self.history[step] = metrics["top1"]
        self._last = step
        if self.csv_path is not None:
            new = not os.path.exists(self.csv_path)
            with open(self.csv_path, "a", newline="") as f:
                writer = csv.writer(f)
                if new:
                    writer.writerow(KNN_FIELDS)
                writer.writerow(
                    [step, repr(metrics["top1"]), repr(metrics["top5"])]
                )
        if self.verbose:
            print(
                f"step {step}: k-NN top-1 {100 * metrics['top1']:.1f}% on "
                f"{metrics['num_test']} held-out images",
                flush=True,
            )

    def on_train_begin(self, logs=None):
        step = self._step()
        if self._last is None and self.csv_path is not None:
            rows = [
                r for r in _read_rows(self.csv_path) if int(r["step"]) <= step
            ]
            temporary = self.csv_path + ".tmp"
            with open(temporary, "w", newline="") as f:
                writer = csv.DictWriter(f, KNN_FIELDS, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(rows)
            os.replace(temporary, self.csv_path)
            if rows:
                self._last = max(int(r["step"]) for r in rows)
        if self._due(step):
            self._log(step)

    def on_epoch_end(self, epoch, logs=None):
        step = self._step()
        if self._due(step):
            self._log(step)


def _split(pair, name):
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise ValueError(
            f"`{name}` must be a pair (images, labels); got "
            f"{type(pair).__name__}."
        )
    images, labels = np.asarray(pair[0]), np.asarray(pair[1])
    if images.ndim != 4 or images.dtype.kind != "f" or not len(images):
        raise ValueError(
            f"`{name}` images must be a non-empty float batch (B, H, W, C); "
            f"got shape {images.shape} and dtype {images.dtype}."
        )
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise ValueError(
            f"`{name}` labels must be integers, one per image "
            f"({len(images)}); got shape {labels.shape} and dtype "
            f"{labels.dtype}."
        )
    if labels.min() < 0:
        raise ValueError(f"`{name}` labels must be >= 0.")
    return images, labels.astype("int64")
