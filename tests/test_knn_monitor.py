"""`KNNMonitor`: the k-NN top-1 of held-out data while a trunk trains.

The features are checked against the backbone's own block outputs
averaged and mean-pooled in NumPy; the schedule (first evaluation, every
`every` steps, resume) with a stand-in model whose optimizer step is set
by hand; one `large` check trains a tiny pretrainer with the monitor.
"""

import csv
import types

import keras
import numpy as np
import pytest

from keras_aim import probing
from keras_aim.callbacks import KNNMonitor
from keras_aim.callbacks.knn_monitor import KNN_FIELDS
from keras_aim.models.aim.aim_backbone import AIMBackbone


@pytest.fixture(scope="module")
def backbone():
    keras.utils.set_random_seed(0)
    return AIMBackbone(
        image_shape=(8, 8, 3),
        patch_size=4,
        hidden_dim=16,
        num_layers=2,
        num_heads=2,
    )


def split(seed, num):
    rng = np.random.RandomState(seed)
    images = rng.randn(num, 8, 8, 3).astype("float32")
    return images, rng.randint(0, 3, num)


def numpy_features(backbone, images, layers):
    blocks = backbone.extract_features(images, layers)
    blocks = [keras.ops.convert_to_numpy(b) for b in blocks]
    return np.mean(blocks, axis=0).mean(axis=1)


def stand_in(backbone, step):
    """What the monitor reads of a model: `backbone`, optimizer step."""
    optimizer = types.SimpleNamespace(iterations=np.int64(step))
    return types.SimpleNamespace(backbone=backbone, optimizer=optimizer)


@pytest.mark.parametrize("layers,blocks", [("last", [0, 1]), ([1], [1])])
def test_evaluates_knn_on_mean_pooled_block_features(backbone, layers, blocks):
    train, test = split(0, 30), split(1, 12)
    monitor = KNNMonitor(train, test, every=5, layers=layers, k=4, batch_size=7)
    monitor.set_model(stand_in(backbone, 0))
    metrics = monitor.evaluate()
    expected = probing.knn_metrics(
        numpy_features(backbone, train[0], blocks),
        train[1],
        numpy_features(backbone, test[0], blocks),
        test[1],
        num_classes=3,
        k=4,
    )
    assert metrics["top1"] == expected["top1"]
    assert metrics["top5"] == expected["top5"]
    np.testing.assert_array_equal(metrics["confusion"], expected["confusion"])
    assert metrics["num_test"] == 12 and metrics["k"] == 4


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert all(list(r) == list(KNN_FIELDS) for r in rows)
    return rows


def test_logs_at_the_start_and_every_n_steps(backbone, tmp_path):
    path = str(tmp_path / "knn.csv")
    monitor = KNNMonitor(split(0, 20), split(1, 8), every=10, csv_path=path)
    model = stand_in(backbone, 0)
    monitor.set_model(model)
    monitor.on_train_begin()
    for step in (5, 12, 19, 20, 45):  # the optimizer step at epoch ends
        model.optimizer.iterations = np.int64(step)
        monitor.on_epoch_end(0)
    assert sorted(monitor.history) == [0, 12, 20, 45]
    rows = read(path)
    assert [int(r["step"]) for r in rows] == [0, 12, 20, 45]
    top1 = monitor.evaluate()["top1"]  # the weights did not change
    assert all(float(r["knn_top1"]) == top1 for r in rows)
    assert all(v == top1 for v in monitor.history.values())

    # A run resumed at step 20 keeps the rows up to 20, drops the rest.
    resumed = KNNMonitor(split(0, 20), split(1, 8), every=10, csv_path=path)
    model = stand_in(backbone, 20)
    resumed.set_model(model)
    resumed.on_train_begin()  # 20 is logged already: no new row
    for step in (25, 31):
        model.optimizer.iterations = np.int64(step)
        resumed.on_epoch_end(0)
    assert [int(r["step"]) for r in read(path)] == [0, 12, 20, 31]

    # A run from step 0 starts the file over.
    fresh = KNNMonitor(split(0, 20), split(1, 8), every=10, csv_path=path)
    fresh.set_model(stand_in(backbone, 0))
    fresh.on_train_begin()
    assert [int(r["step"]) for r in read(path)] == [0]


def test_step_offset_and_no_file(backbone):
    monitor = KNNMonitor(split(0, 20), split(1, 8), every=3, step_offset=100)
    monitor.set_model(stand_in(backbone, 2))
    monitor.on_train_begin()
    assert list(monitor.history) == [102]


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(every=0), "every"),
        (dict(every=1.5), "every"),
        (dict(k=0), "k"),
        (dict(temperature=-1.0), "temperature"),
        (dict(batch_size=0), "batch_size"),
        (dict(csv_path=""), "csv_path"),
        (dict(csv_path=3), "csv_path"),
        (dict(train=split(0, 4)[0]), "pair"),
        (dict(train=(np.zeros((4, 8, 8, 3), "int32"), [0] * 4)), "float"),
        (dict(train=(np.zeros((4, 8, 8, 3), "float32"), [0] * 3)), "labels"),
        (dict(train=(np.zeros((4, 8, 8, 3), "float32"), [0.5] * 4)), "labels"),
        (dict(test=(np.zeros((2, 8, 8, 3), "float32"), [0, -1])), ">= 0"),
        (dict(test=(np.zeros((2, 4, 4, 3), "float32"), [0, 1])), "same shape"),
    ],
)
def test_bad_arguments_are_refused(change, match):
    arguments = dict(train=split(0, 4), test=split(1, 2), every=2)
    arguments.update(change)
    with pytest.raises(ValueError, match=match):
        KNNMonitor(**arguments)


def test_a_model_without_a_trunk_is_refused():
    monitor = KNNMonitor(split(0, 4), split(1, 2), every=2)
    dense = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="AIMPretrainer or AIMBackbone"):
        monitor.set_model(dense)


@pytest.mark.large(backend="jax")
def test_logs_the_weights_of_a_training_pretrainer(tmp_path):
    """During `fit` (jax keeps the weights outside the variables between
    syncs), each row is the k-NN of the weights at that step."""
    from keras_aim import optimizers
    from keras_aim.models.aim.aim_pretrainer import AIMPretrainer

    keras.utils.set_random_seed(0)
    trunk = AIMBackbone(
        image_shape=(8, 8, 3),
        patch_size=4,
        hidden_dim=16,
        num_layers=1,
        num_heads=2,
    )
    pretrainer = AIMPretrainer(trunk, head_hidden_dim=16, head_num_layers=1)
    pretrainer.compile(
        optimizer=optimizers.pretraining_optimizer(
            20, batch_size=8, base_learning_rate=1e-2, base_batch_size=8
        )
    )
    path = str(tmp_path / "knn.csv")
    monitor = KNNMonitor(split(0, 24), split(1, 12), every=4, csv_path=path)
    images = split(2, 32)[0]  # 4 steps of 8 per epoch
    before = None
    for epoch in range(2):
        pretrainer.fit(
            images,
            epochs=epoch + 1,
            initial_epoch=epoch,
            batch_size=8,
            verbose=0,
            callbacks=[monitor],
        )
        features = numpy_features(trunk, split(1, 12)[0], [0])
        if before is not None:
            assert not np.allclose(features, before)  # it did train
        before = features
    rows = read(path)
    assert [int(r["step"]) for r in rows] == [0, 4, 8]
    assert float(rows[-1]["knn_top1"]) == monitor.evaluate()["top1"]
