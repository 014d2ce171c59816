"""Block features of a frozen backbone, computed once: in memory, or in a
`.npy` file for sets too large for memory."""

import math
import os

import keras
import numpy as np

from keras_aim.layers.attentive_probe import average_features
from keras_aim.utils.validation import positive_int

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
