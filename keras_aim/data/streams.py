"""The streams behind `pretraining_dataset`: items read by position.

Digits, photos and folders are finite and indexable, so the stream is a
range of positions mapped to items (a stateless per-epoch permutation)
and their augmented views: any batch is O(1) to reach and each process of
a data-parallel run reads only its slice. tfds datasets go through a
shuffle buffer instead.
"""

import dataclasses

import numpy as np

from keras_aim.data.common import import_tensorflow
from keras_aim.data.sources import load_tfds
from keras_aim.data.sources import parse_tfds
from keras_aim.data.sources import to_rgb
from keras_aim.utils.validation import positive_int


def _views(images_fn, augment, crops_per_image, seed):
    """Maps `(index, item)` to `crops_per_image` augmented views.

    `images_fn(item)` returns the source image; view `j` of stream element
    `i` uses the stateless seed derived from `(seed, i, j)`.
    """
    tf = import_tensorflow()
    base = tf.constant([int(seed), 0], tf.int32)

    def fn(index, item):
        image = images_fn(item)
        element_seed = tf.random.experimental.stateless_fold_in(
            base, tf.cast(index, tf.int32)
        )
        seeds = tf.random.experimental.stateless_split(
            element_seed, crops_per_image
        )
        return tf.stack(
            [augment(image, seeds[j]) for j in range(crops_per_image)]
        )

    return fn


def batch_and_prefetch(dataset, batch_size, drop_remainder):
    tf = import_tensorflow()
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(
        tf.data.AUTOTUNE
    )


def shard_sizes(batch_size, crops_per_image, num_shards, shard_index):
    num_shards = positive_int(num_shards, "num_shards")
    if not 0 <= int(shard_index) < num_shards:
        raise ValueError(
            f"`shard_index` must be in [0, num_shards={num_shards}); got "
            f"{shard_index!r}."
        )
    if batch_size % (num_shards * crops_per_image):
        raise ValueError(
            f"The global `batch_size`={batch_size} must be divisible by "
            f"num_shards * crops_per_image = {num_shards * crops_per_image} "
            "(each shard takes an equal slice of every global batch)."
        )
    return num_shards, int(shard_index)


@dataclasses.dataclass(frozen=True)
class StreamOrder:
    """Which items a shard's stream reads, in what order, in what batches.

    `crops` views per item fill consecutive slots of a global batch of
    `batch_size`; shard `shard_index` of `num_shards` takes an equal slice
    of every global batch; `start_batch` skips the batches a resumed run
    has consumed.
    """

    batch_size: int
    crops: int = 1
    seed: int = 0
    shuffle: bool = True
    repeat: bool = True
    start_batch: int = 0
    num_shards: int = 1
    shard_index: int = 0
    drop_remainder: bool = True

    def batch(self, dataset):
        """This shard's batches of `dataset`'s elements, prefetched."""
        per_shard = self.batch_size // self.num_shards
        return batch_and_prefetch(dataset, per_shard, self.drop_remainder)


def shard_positions(num_items, order):
    """The item positions this shard reads, from `start_batch` on.

    Position `k` is the `k`-th source item of the global stream (its views
    fill `crops` consecutive slots); shard `index` of `num_shards` takes
    its slice of every global batch. Starting anywhere costs nothing: no
    consumed batch is read again on resume.
    """
    tf = import_tensorflow()
    start_batch = positive_int(order.start_batch, "start_batch", minimum=0)
    items_per_batch = order.batch_size // order.crops
    per_shard = items_per_batch // order.num_shards
    start = start_batch * items_per_batch
    stop = 2**62 if order.repeat else num_items
    positions = tf.data.Dataset.range(start, stop)
    if order.num_shards > 1:
        positions = positions.filter(
            lambda k: (k % items_per_batch) // per_shard == order.shard_index
        )
    return positions


def indexed_views(fetch, num_items, augment, order):
    """Maps position `k` to its `crops` augmented views.

    The item at position `k` of epoch `k // N` is a stateless permutation
    of `k % N` (`tf.random.experimental.index_shuffle`, seeded by `seed`
    and the epoch): every epoch visits every item once, in an order that
    depends only on the seed. View `j` is augmented with the stateless seed
    of `(seed, k, j)`.
    """
    tf = import_tensorflow()
    seed, crops = order.seed, order.crops
    base = tf.constant([int(seed), 0], tf.int32)
    last = tf.constant(num_items - 1, tf.int64)

    def fn(position):
        epoch = position // num_items
        index = position % num_items
        if order.shuffle:
            epoch_seed = tf.stack([tf.cast(seed, tf.int64), epoch])
            index = tf.random.experimental.index_shuffle(
                index, seed=epoch_seed, max_index=last
            )
        image = fetch(index)
        element_seed = tf.random.experimental.stateless_fold_in(
            base, tf.cast(position, tf.int32)
        )
        seeds = tf.random.experimental.stateless_split(element_seed, crops)
        return tf.stack([augment(image, seeds[j]) for j in range(crops)])

    return fn


def tfds_stream(source, data_dir, image_key, augment, order, shuffle_buffer):
    """A tfds stream: a shuffle buffer, so resuming re-reads the skipped
    items (tfds gives no random access by position)."""
    tf = import_tensorflow()
    name, split = parse_tfds(source)
    dataset = load_tfds(name, split or "train", data_dir)
    dataset = dataset.map(
        lambda example: to_rgb(example[image_key]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if order.shuffle:
        dataset = dataset.shuffle(
            shuffle_buffer, seed=order.seed, reshuffle_each_iteration=True
        )
    if order.repeat:
        dataset = dataset.repeat()
    dataset = dataset.enumerate()
    items_per_batch = order.batch_size // order.crops
    per_shard = items_per_batch // order.num_shards
    if order.start_batch:
        dataset = dataset.skip(order.start_batch * items_per_batch)
    if order.num_shards > 1:
        dataset = dataset.filter(
            lambda k, _: (k % items_per_batch) // per_shard == order.shard_index
        )
    dataset = dataset.map(
        _views(lambda x: x, augment, order.crops, order.seed),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return order.batch(dataset.unbatch())


def photo_reader(photos):
    """Returns `index -> uint8 photo`, the photos packed in one buffer."""
    tf = import_tensorflow()
    flat = tf.constant(np.concatenate([p.reshape(-1) for p in photos]))
    sizes = [p.size for p in photos]
    offsets = tf.constant(np.cumsum([0] + sizes[:-1]), tf.int64)
    shapes = tf.constant([p.shape for p in photos], tf.int64)

    def read(index):
        shape = shapes[index]
        start = offsets[index]
        return tf.reshape(flat[start : start + tf.reduce_prod(shape)], shape)

    return read
