"""Block features of a frozen backbone, computed once: in memory, or in a
`.npy` file for sets too large for memory.

The on-disk cache of a large set is a uniquely named temporary file in a
folder the caller gives (by default a fresh temporary folder), unlinked as
soon as it is mapped: the mapping keeps the data for as long as the
returned array lives, and nothing is left on disk whatever ends the
process (success, an exception, SIGTERM, SIGKILL). Where an open file
cannot be unlinked (Windows), it is removed when the array is collected
or the interpreter exits. Two probes never share a file.
"""

import contextlib
import math
import os
import shutil
import tempfile
import uuid
import weakref

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

    def _make_order(self, epoch=None):
        if not self.shuffle:
            return np.arange(len(self.y))
        epoch = self.epoch if epoch is None else epoch
        rng = np.random.RandomState([self.seed, epoch])
        return rng.permutation(len(self.y))

    def epoch_indices(self, epoch):
        """The example indices that epoch `epoch` visits, batch after batch
        (each batch's indices ascending, as `__getitem__` reads them)."""
        order = self._make_order(epoch)
        batch = np.arange(len(order)) // self.batch_size
        return order[np.lexsort((order, batch))]

    @property
    def in_memory(self):
        """Whether the inputs are an in-memory array (not a memory map)."""
        return isinstance(self.x, np.ndarray) and not isinstance(
            self.x, np.memmap
        )

    def as_tf_dataset(self, epochs):
        """The `epochs` epochs after the current one (`self.epoch + 1` on)
        as one `tf.data.Dataset` that runs no Python: what `fit` trains on
        with this `PyDataset`, since Keras's `fit` calls `on_epoch_end`
        once as it starts.

        Why: Keras feeds a `PyDataset` to TensorFlow through
        `tf.data.Dataset.from_generator`, which calls back into Python from
        TensorFlow's threads; under load that route has crashed the
        process (a segfault or abort inside `fit`) on the TensorFlow
        backend. Here the arrays are captured once and each batch is a
        `tf.gather` of precomputed indices: the same batches, in the same
        order, as `__getitem__` gives. Pass `steps_per_epoch=len(self)`
        to `fit` (the dataset holds every epoch back to back).
        """
        import tensorflow as tf

        epochs = positive_int(epochs, "epochs")
        orders = np.stack(
            [self.epoch_indices(self.epoch + 1 + e) for e in range(epochs)]
        ).astype("int32")
        x = tf.constant(np.asarray(self.x))
        y = tf.constant(self.y)
        size = self.batch_size

        def one_epoch(indices):
            return tf.data.Dataset.from_tensor_slices(indices).batch(size)

        dataset = tf.data.Dataset.from_tensor_slices(orders).flat_map(one_epoch)
        dataset = dataset.map(lambda i: (tf.gather(x, i), tf.gather(y, i)))
        return dataset.prefetch(2)

    def __len__(self):
        return math.ceil(len(self.y) / self.batch_size)

    def __getitem__(self, index):
        chosen = np.sort(
            self._order[index * self.batch_size : (index + 1) * self.batch_size]
        )
        return np.asarray(self.x[chosen]), self.y[chosen]

    def on_epoch_end(self, epochs=1):
        """Moves on `epochs` epochs (Keras calls it with none: one)."""
        self.epoch += epochs
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


def _remove(path, folder=None):
    with contextlib.suppress(OSError):
        os.remove(path)
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


def temporary_memmap(shape, folder=None, dtype="float32"):
    """A `.npy` memory map in a unique temporary file, already unlinked.

    Args:
        shape: the array's shape.
        folder: where the file lives while it is mapped (it must exist);
            `None` makes (and removes) a fresh temporary folder.
        dtype: the array's dtype.

    Returns:
        A writable `np.memmap`; its file is gone from `folder` already
        (POSIX), or is removed when the array is collected (Windows).
    """
    own = folder is None
    if own:
        folder = tempfile.mkdtemp(prefix="keras_aim_features_")
    elif not os.path.isdir(folder):
        raise ValueError(
            f"`cache_dir`={folder!r} is not an existing folder; pass a "
            "folder for the feature cache (or None for a temporary one)."
        )
    path = os.path.join(folder, f"features_cache-{uuid.uuid4().hex}.npy")
    try:
        array = np.lib.format.open_memmap(
            path, mode="w+", dtype=dtype, shape=tuple(shape)
        )
    except BaseException:
        _remove(path, folder if own else None)
        raise
    _remove(path, folder if own else None)
    if os.path.exists(path):  # The OS keeps mapped files (Windows).
        weakref.finalize(array, _remove, path, folder if own else None)
    return array


@contextlib.contextmanager
def _cache_file(cache_path, shape):
    """A memory map written beside `cache_path`, renamed onto it on success.

    A second run writing the same `cache_path` writes its own file, so the
    first one's mapping is never truncated under it; a failed run removes
    its file.
    """
    cache_path = os.path.abspath(os.fspath(cache_path))
    folder, name = os.path.split(cache_path)
    temporary = os.path.join(folder, f".{name}.tmp-{uuid.uuid4().hex[:12]}")
    try:
        array = np.lib.format.open_memmap(
            temporary, mode="w+", dtype="float32", shape=tuple(shape)
        )
        yield array
        array.flush()
        os.replace(temporary, cache_path)
    except BaseException:
        _remove(temporary)
        raise


def block_features(
    backbone,
    data,
    layers,
    batch_size=64,
    pool=None,
    cache_path=None,
    verbose=1,
    cache_dir=None,
):
    """Computes features of a labelled set once.

    Args:
        backbone: an `AIMBackbone`.
        data: a `keras_aim.data.LabelledImages`.
        layers: block indices (their outputs are averaged) or `"final"`.
        batch_size: int, images per forward pass.
        pool: `None` (all tokens) or `"mean"`.
        cache_path: a `.npy` file to keep the features in (a memory map),
            written beside it and renamed onto it once complete. By default
            they stay in memory unless larger than `IN_MEMORY_LIMIT_BYTES`,
            then in a temporary memory map (see the module doc).
        verbose: int, 1 shows a progress bar.
        cache_dir: the folder of that temporary memory map (e.g. the run's
            output folder); defaults to a fresh temporary folder.

    Returns:
        `(features, labels)`: float32 `(N, T, D)` (or `(N, D)` pooled) and
        int32 `(N,)`; `N` drops files that failed to decode.
    """
    if cache_dir is not None and not os.path.isdir(cache_dir):
        raise ValueError(
            f"`cache_dir`={cache_dir!r} is not an existing folder; pass a "
            "folder for the feature cache (or None for a temporary one)."
        )
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
    with contextlib.ExitStack() as stack:
        if cache_path is not None:
            features = stack.enter_context(
                _cache_file(cache_path, (total, *shape))
            )
        elif num_bytes > IN_MEMORY_LIMIT_BYTES:
            features = temporary_memmap((total, *shape), cache_dir)
        else:
            features = np.empty((total, *shape), "float32")
        count, labels = _fill(model, data, batch_size, features, verbose)
    data.check_decoded(count)
    if not count:
        raise ValueError(f"No image of {data.source!r} could be read.")
    return features[:count], labels[:count]


def _fill(model, data, batch_size, features, verbose):
    """Writes the features of every batch; returns `(count, labels)`."""
    total = len(features)
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
    return count, labels
