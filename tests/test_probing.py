"""Probing: cached = uncached, metrics against NumPy, labelled folders with
damaged files, layer-wise learning rates."""

import os

import keras
import numpy as np
import pytest
from conftest import to_numpy
from PIL import Image

import keras_aim
from keras_aim import data
from keras_aim import optimizers
from keras_aim import probing


@pytest.fixture(scope="module")
def backbone():
    keras.utils.set_random_seed(0)
    return keras_aim.AIMBackbone(
        image_shape=(16, 16, 3),
        patch_size=4,
        hidden_dim=32,
        num_layers=2,
        num_heads=2,
    )


@pytest.fixture(scope="module")
def digits_split():
    return (
        data.labelled_images("digits", "train"),
        data.labelled_images("digits", "test"),
    )


@pytest.mark.parametrize("probe", ["attentive", "linear"])
@pytest.mark.large(backend="torch")
def test_cached_features_give_the_same_accuracy(backbone, digits_split, probe):
    train, test = digits_split
    results = []
    for cache in (True, False):
        classifier = probing.train_probe(
            backbone,
            train,
            probe=probe,
            probe_layers=[0, 1],
            epochs=2,
            batch_size=128,
            learning_rate=1e-2,
            seed=3,
            cache_features=cache,
            verbose=0,
        )
        logits, labels = probing.predict_logits(classifier, test)
        results.append((logits, probing.classification_metrics(logits, labels)))
    (cached, a), (uncached, b) = results
    assert a["top1"] == b["top1"] and a["top5"] == b["top5"]
    np.testing.assert_allclose(cached, uncached, atol=1e-3)
    assert np.std(cached) > 0.1  # the head was trained, not left at zero


def test_block_features_are_the_averaged_block_outputs(backbone):
    test = data.labelled_images("digits", "test")
    features, labels = probing.block_features(
        backbone, test, [0, 1], batch_size=100, verbose=0
    )
    images, want_labels = test.to_arrays()
    blocks = backbone.extract_features(images[:7], [0, 1])
    expected = (to_numpy(blocks[0]) + to_numpy(blocks[1])) / 2
    np.testing.assert_allclose(features[:7], expected, atol=1e-5)
    np.testing.assert_array_equal(labels, want_labels)
    pooled, _ = probing.block_features(
        backbone, test, "final", pool="mean", verbose=0
    )
    np.testing.assert_allclose(
        pooled[:7], to_numpy(backbone(images[:7])).mean(axis=1), atol=1e-5
    )


def test_features_can_live_on_disk(backbone, tmp_path):
    test = data.labelled_images("digits", "test")
    path = str(tmp_path / "features.npy")
    on_disk, _ = probing.block_features(
        backbone, test, [1], cache_path=path, verbose=0
    )
    in_memory, _ = probing.block_features(backbone, test, [1], verbose=0)
    assert isinstance(on_disk, np.memmap) and os.path.getsize(path) > 0
    np.testing.assert_array_equal(np.load(path), in_memory)


def test_linear_probe_matches_numpy():
    rng = np.random.default_rng(2)
    head = keras_aim.layers.AIMLinearProbe(hidden_dim=6, num_classes=3)
    a, b = (rng.normal(size=(4, 5, 6)).astype("float32") for _ in range(2))
    head([a, b])
    for variable in head.weights:
        value = rng.normal(size=variable.shape)
        if "variance" in variable.path:
            value = np.abs(value) + 0.5
        variable.assign(value.astype("float32"))
    pooled = ((a + b) / 2).mean(axis=1)
    bn = head.batch_norm
    normed = (pooled - to_numpy(bn.moving_mean)) / np.sqrt(
        to_numpy(bn.moving_variance) + 1e-6
    )
    expected = normed @ to_numpy(head.classifier.kernel)
    expected = expected + to_numpy(head.classifier.bias)
    np.testing.assert_allclose(to_numpy(head([a, b])), expected, atol=1e-5)


def numpy_topk(logits, labels, k):
    hits = 0
    for row, label in zip(logits, labels):
        better = np.sum(row > row[label])
        hits += better < k
    return hits / len(labels)


def test_metrics_match_an_independent_computation():
    rng = np.random.default_rng(4)
    logits = rng.normal(size=(200, 12))
    labels = rng.integers(0, 12, 200)
    metrics = probing.classification_metrics(logits, labels)
    assert metrics["top1"] == pytest.approx(numpy_topk(logits, labels, 1))
    assert metrics["top5"] == pytest.approx(numpy_topk(logits, labels, 5))
    confusion = metrics["confusion"]
    assert confusion.sum() == 200
    for i, j in zip(labels, logits.argmax(axis=1)):
        assert confusion[i, j] > 0
    np.testing.assert_array_equal(
        confusion.sum(axis=1), np.bincount(labels, minlength=12)
    )
    three = probing.classification_metrics(logits[:, :3], labels % 3)
    assert three["top5"] == 1.0  # top-k of 3 classes


def test_labels_out_of_range_are_refused(backbone, digits_split):
    train, _ = digits_split
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        probing.train_probe(backbone, train, num_classes=5, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="outside"):
        probing.classification_metrics(np.zeros((2, 3)), [0, 7])


def test_indexed_batches_cover_each_epoch_in_a_seeded_order():
    x = np.arange(10)[:, None]
    batches = probing.IndexedBatches(x, np.arange(10), 4, seed=1)
    first = np.concatenate([batches[i][1] for i in range(len(batches))])
    batches.on_epoch_end()
    second = np.concatenate([batches[i][1] for i in range(len(batches))])
    assert sorted(first) == sorted(second) == list(range(10))
    again = probing.IndexedBatches(x, np.arange(10), 4, seed=1)
    np.testing.assert_array_equal(
        np.concatenate([again[i][1] for i in range(3)]), first
    )
    assert not np.array_equal(first, second)
    with pytest.raises(ValueError, match="empty"):
        probing.IndexedBatches(x[:0], np.arange(0), 4)


def test_indexed_batches_as_a_tf_dataset_are_the_same_batches():
    x = np.random.RandomState(0).rand(11, 2).astype("float32")
    batches = probing.IndexedBatches(x, np.arange(11), 4, seed=3)
    batches.on_epoch_end()
    dataset = list(batches.as_tf_dataset(3).as_numpy_iterator())
    assert len(dataset) == 3 * len(batches) == 9
    for epoch in range(3):  # the three epochs after the current one
        batches.on_epoch_end()
        for i in range(len(batches)):
            got_x, got_y = dataset[epoch * len(batches) + i]
            want_x, want_y = batches[i]
            np.testing.assert_array_equal(got_y, want_y)
            np.testing.assert_array_equal(got_x, want_x)
    with pytest.raises(ValueError, match="epochs"):
        batches.as_tf_dataset(0)


def _dense_net():
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    net.compile(optimizer="sgd", loss="mse")
    return net


def test_fit_or_diverge_trains_on_the_batches_of_the_next_epochs(
    monkeypatch, tmp_path
):
    """On every backend: the steps of a plain loop over `batches[i]`, from
    the epoch after the current one (Keras's `fit` calls `on_epoch_end`
    once as it starts); on TensorFlow without a Python call per batch."""
    rng = np.random.RandomState(0)
    x = rng.rand(10, 3).astype("float32")
    y = rng.rand(10, 2).astype("float32")
    reference = _dense_net()
    expected = probing.IndexedBatches(x, y, 4, seed=1)
    for _ in range(3):
        expected.on_epoch_end()
        for i in range(len(expected)):
            reference.train_on_batch(*expected[i])
    expected.on_epoch_end()
    batches = probing.IndexedBatches(x, y, 4, seed=1)
    calls = []
    original = probing.IndexedBatches.__getitem__

    def counted(self, index):
        calls.append(index)
        return original(self, index)

    monkeypatch.setattr(probing.IndexedBatches, "__getitem__", counted)
    net = probing.divergence.fit_or_diverge(_dense_net(), batches, epochs=3)
    tensorflow = keras.backend.backend() == "tensorflow"
    assert (calls == []) == tensorflow  # no Python callback fed a batch
    assert batches.epoch == expected.epoch == 4
    assert int(net.optimizer.iterations.numpy()) == 9
    for got, want in zip(net.weights, reference.weights):
        # The same steps in one process; the tolerance covers a fused
        # `fit` step against `train_on_batch` in float32.
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5)
    if not tensorflow:
        return
    # A memory map (a set too large for memory) keeps the PyDataset route.
    mapped = np.lib.format.open_memmap(
        str(tmp_path / "x.npy"), mode="w+", dtype="float32", shape=x.shape
    )
    mapped[:] = x
    probing.divergence.fit_or_diverge(
        _dense_net(), probing.IndexedBatches(mapped, y, 4, seed=1), epochs=1
    )
    assert calls


def test_layer_decay_scales_each_block_learning_rate():
    layers = {}
    for name in ("patch_embedding", "block_0", "block_1", "probe_head"):
        dense = keras.layers.Dense(3, use_bias=False, name="kernel_owner")
        with keras.name_scope(name):
            dense.build((None, 2))
        layers[name] = dense.kernel
    assert layers["block_1"].path.startswith("block_1/")
    optimizer = optimizers.LayerDecayAdamW(
        learning_rate_scales=optimizers.layer_decay_scales(2, 0.5),
        learning_rate=0.1,
        weight_decay=0.0,
        no_weight_decay_names=[],
    )
    variables = list(layers.values())
    before = [to_numpy(v) for v in variables]
    optimizer.apply([keras.ops.ones(v.shape) for v in variables], variables)
    steps = [np.abs(to_numpy(v) - b).max() for v, b in zip(variables, before)]
    # Adam's first step moves each weight by the learning rate it got.
    np.testing.assert_allclose(
        steps, [0.1 * 0.125, 0.1 * 0.25, 0.05, 0.1], rtol=1e-3
    )
    restored = keras.optimizers.deserialize(
        keras.optimizers.serialize(optimizer)
    )
    assert restored.learning_rate_scales == optimizer.learning_rate_scales


def write_image(path, size=(20, 24), seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (*size, 3), dtype="uint8")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(pixels).save(path)


def imagenet_folder(root, split_folders):
    for split in split_folders:
        for c, name in enumerate(("cat", "dog", "fox")):
            for i in range(4 if split != "val" else 2):
                base = (
                    os.path.join(root, split, name)
                    if split
                    else os.path.join(root, name)
                )
                write_image(os.path.join(base, f"{i}.png"), seed=10 * c + i)
    return str(root)


def test_imagenet_layout_folders(tmp_path):
    converter = keras_aim.AIMImageConverter(resize_size=18, crop_size=16)
    split = imagenet_folder(tmp_path / "split", ["train", "val"])
    train = data.labelled_images(split, "train", image_converter=converter)
    test = data.labelled_images(split, "test", image_converter=converter)
    assert train.class_names == test.class_names == ["cat", "dog", "fox"]
    assert (train.num_examples, test.num_examples) == (12, 6)
    images, labels = test.to_arrays()
    assert images.shape == (6, 16, 16, 3)
    np.testing.assert_array_equal(labels, [0, 0, 1, 1, 2, 2])
    flat = imagenet_folder(tmp_path / "flat", [""])
    whole = data.labelled_images(flat, "all", image_converter=converter)
    assert whole.num_examples == 12
    part = data.labelled_images(flat, "train", image_converter=converter)
    rest = data.labelled_images(flat, "test", image_converter=converter)
    assert part.num_examples + rest.num_examples == 12
    assert not set(part.files) & set(rest.files)


def test_unreadable_images_are_skipped_and_named(tmp_path):
    root = imagenet_folder(tmp_path / "damaged", [""])
    (tmp_path / "damaged" / "cat" / "empty.png").write_bytes(b"")
    (tmp_path / "damaged" / "dog" / "notes.jpg").write_text("not an image")
    good = (tmp_path / "damaged" / "fox" / "0.png").read_bytes()
    (tmp_path / "damaged" / "fox" / "truncated.png").write_bytes(good[:60])
    # Complete on the outside (signature, IEND), corrupt inside.
    middle = len(good) // 2
    corrupt = good[:middle] + b"\x00" * 40 + good[middle + 40 :]
    (tmp_path / "damaged" / "fox" / "corrupt.png").write_bytes(corrupt)
    converter = keras_aim.AIMImageConverter(resize_size=18, crop_size=16)
    with pytest.warns(UserWarning, match="Skipped 3 unreadable") as record:
        whole = data.labelled_images(root, "all", image_converter=converter)
    message = str(record[0].message)
    assert "empty.png is empty" in message
    assert "notes.jpg is not a JPEG" in message
    assert "truncated.png is truncated" in message
    assert whole.num_examples == 13
    with pytest.warns(UserWarning, match="corrupt.png cannot be decoded"):
        images, labels = whole.to_arrays()
    assert len(labels) == 12 and len(whole.skipped) == 4
    empty = tmp_path / "nothing" / "cat"
    empty.mkdir(parents=True)
    (empty / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="one sub-folder of images per class"):
        data.labelled_images(str(tmp_path / "nothing"), "all")
