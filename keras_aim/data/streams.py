"""The streams behind `pretraining_dataset`: items read by position.

Digits, photos and folders are finite and indexable, so the stream is a
range of positions mapped to items (a stateless per-epoch permutation)
and their augmented views: any batch is O(1) to reach and each process of
a data-parallel run reads only its slice. tfds datasets go through a
shuffle buffer instead.
"""

import numpy as np

from keras_aim.data._common import _tf
from keras_aim.data.sources import _load_tfds
from keras_aim.data.sources import _parse_tfds
from keras_aim.data.sources import _to_rgb
from keras_aim.validation import positive_int


def _views(images_fn, augment, crops_per_image, seed):
    """Maps `(index, item)` to `crops_per_image` augmented views.

    `images_fn(item)` returns the source image; view `j` of stream element
    `i` uses the stateless seed derived from `(seed, i, j)`.
    """
    tf = _tf()
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


def _batched(dataset, batch_size, drop_remainder):
    tf = _tf()
    return dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(
        tf.data.AUTOTUNE
    )


def _shard_sizes(batch_size, crops_per_image, num_shards, shard_index):
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


def _positions(
    num_items, batch_size, crops, start_batch, repeat, num_shards, index
):
    """The item positions this shard reads, from `start_batch` on.

    Position `k` is the `k`-th source item of the global stream (its views
    fill `crops` consecutive slots); shard `index` of `num_shards` takes
    its slice of every global batch. Starting anywhere costs nothing: no
    consumed batch is read again on resume.
    """
    tf = _tf()
    start_batch = positive_int(start_batch, "start_batch", minimum=0)
    items_per_batch = batch_size // crops
    per_shard = items_per_batch // num_shards
    start = start_batch * items_per_batch
    stop = 2**62 if repeat else num_items
    positions = tf.data.Dataset.range(start, stop)
    if num_shards > 1:
        positions = positions.filter(
            lambda k: (k % items_per_batch) // per_shard == index
        )
    return positions


def _indexed_views(fetch, num_items, augment, crops, seed, shuffle):
    """Maps position `k` to its `crops` augmented views.

    The item at position `k` of epoch `k // N` is a stateless permutation
    of `k % N` (`tf.random.experimental.index_shuffle`, seeded by `seed`
    and the epoch): every epoch visits every item once, in an order that
    depends only on the seed. View `j` is augmented with the stateless seed
    of `(seed, k, j)`.
    """
    tf = _tf()
    base = tf.constant([int(seed), 0], tf.int32)
    last = tf.constant(num_items - 1, tf.int64)

    def fn(position):
        epoch = position // num_items
        index = position % num_items
        if shuffle:
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


def _tfds_stream(
    source,
    data_dir,
    image_key,
    augment,
    crops,
    seed,
    shuffle,
    repeat,
    shuffle_buffer,
    batch_size,
    drop_remainder,
    start_batch,
    num_shards,
    shard_index,
):
    """A tfds stream: a shuffle buffer, so resuming re-reads the skipped
    items (tfds gives no random access by position)."""
    tf = _tf()
    name, split = _parse_tfds(source)
    dataset = _load_tfds(name, split or "train", data_dir)
    dataset = dataset.map(
        lambda example: _to_rgb(example[image_key]),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if shuffle:
        dataset = dataset.shuffle(
            shuffle_buffer, seed=seed, reshuffle_each_iteration=True
        )
    if repeat:
        dataset = dataset.repeat()
    dataset = dataset.enumerate()
    items_per_batch = batch_size // crops
    per_shard = items_per_batch // num_shards
    if start_batch:
        dataset = dataset.skip(start_batch * items_per_batch)
    if num_shards > 1:
        dataset = dataset.filter(
            lambda k, _: (k % items_per_batch) // per_shard == shard_index
        )
    dataset = dataset.map(
        _views(lambda x: x, augment, crops, seed),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    dataset = dataset.unbatch()
    return _batched(dataset, batch_size // num_shards, drop_remainder)


def _photo_reader(photos):
    """Returns `index -> uint8 photo`, the photos packed in one buffer."""
    tf = _tf()
    flat = tf.constant(np.concatenate([p.reshape(-1) for p in photos]))
    sizes = [p.size for p in photos]
    offsets = tf.constant(np.cumsum([0] + sizes[:-1]), tf.int64)
    shapes = tf.constant([p.shape for p in photos], tf.int64)

    def read(index):
        shape = shapes[index]
        start = offsets[index]
        return tf.reshape(flat[start : start + tf.reduce_prod(shape)], shape)

    return read
