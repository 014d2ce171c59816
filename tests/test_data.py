"""Tests for keras_aim.data, the tf.data pipelines (any Keras backend).

Augmentations are checked by recovering them: a shifted digit must equal the
original shifted by some (dy, dx) in [-2, 2]; a photo crop must be a window
of the photo's train region; brightness jitter must be one scale factor.
The evaluation transform is checked against PIL's bicubic resize (within one
grey level for 99.9% of values and two for all; PIL rounds to uint8 after
each of its two passes) and NumPy crop and normalisation.
"""

import os

import numpy as np
import pytest
from conftest import to_numpy
from PIL import Image

tf = pytest.importorskip("tensorflow")
pytest.importorskip("sklearn")
pytest.importorskip("skimage")

from keras_aim import data  # noqa: E402
from keras_aim.models.aim.aim_image_converter import AIMImageConverter  # noqa: E402

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
ONE_GREY_LEVEL = 1.0 / 255.0 / STD.min()


def numpy_normalize(image):
    return (np.asarray(image, "float64") / 255.0 - MEAN) / STD


def denormalize(image):
    return np.round((np.asarray(image, "float64") * STD + MEAN) * 255.0)


def take(dataset, count):
    return [np.asarray(batch) for batch in dataset.take(count)]


def write_png(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture
def class_folder(tmp_path):
    """Two classes of solid-colour PNGs of different sizes."""
    colours = {"cat": (200, 30, 40), "dog": (20, 60, 220)}
    sizes = [(20, 30), (24, 24), (30, 18)]
    for name, colour in colours.items():
        for i, (height, width) in enumerate(sizes):
            image = np.zeros((height, width, 3), "uint8") + np.uint8(colour)
            write_png(str(tmp_path / name / f"{i}.png"), image)
    return tmp_path, colours


# Built-in data.


def test_load_digits_images():
    from sklearn.datasets import load_digits

    images, labels = data.load_digits_images(16)
    assert images.shape == (1797, 16, 16, 3) and images.dtype == np.uint8
    assert labels.shape == (1797,) and set(labels.tolist()) == set(range(10))
    assert images.max() == 255 and images.min() == 0
    np.testing.assert_array_equal(images[..., 0], images[..., 2])
    native, _ = data.load_digits_images(8)
    expected = np.round(load_digits().images * 255.0 / 16.0)
    np.testing.assert_array_equal(native[..., 1], expected)


def test_load_sample_photos():
    photos = data.load_sample_photos()
    names = [name for name, _ in photos]
    assert len(photos) == 21 and len(set(names)) == 21
    assert {"astronaut", "chelsea", "coffee", "china", "flower"} <= set(names)
    for _, image in photos:
        assert image.dtype == np.uint8 and image.ndim == 3
        assert image.shape[-1] == 3 and min(image.shape[:2]) >= 100
    camera = dict(photos)["camera"]
    np.testing.assert_array_equal(camera[..., 0], camera[..., 1])


# Augmentation.


def test_normalize_matches_numpy():
    image = np.random.default_rng(0).integers(0, 256, (5, 6, 3))
    np.testing.assert_allclose(
        data.normalize(image).numpy(), numpy_normalize(image), atol=1e-5
    )


def test_random_resized_crop_full_image_and_fallback():
    image = np.random.default_rng(0).uniform(0, 255, (20, 20, 3))
    full = data.random_resized_crop(
        image, 20, seed=3, scale=(1.0, 1.0), ratio=(1.0, 1.0)
    )
    np.testing.assert_allclose(full.numpy(), image, atol=1e-3)
    # A 10x40 image cannot hold a square of its whole area: torchvision falls
    # back to the centred crop clamped to the ratio range, here columns 15-25.
    wide = np.random.default_rng(1).uniform(0, 255, (10, 40, 3))
    fallback = data.random_resized_crop(
        wide, 10, seed=3, scale=(1.0, 1.0), ratio=(1.0, 1.0)
    )
    np.testing.assert_allclose(fallback.numpy(), wide[:, 15:25], atol=1e-3)


def test_random_resized_crop_is_seeded():
    image = np.random.default_rng(0).uniform(0, 255, (40, 60, 3))
    a = data.random_resized_crop(image, (12, 16), seed=(1, 2)).numpy()
    b = data.random_resized_crop(image, (12, 16), seed=(1, 2)).numpy()
    c = data.random_resized_crop(image, (12, 16), seed=(1, 3)).numpy()
    assert a.shape == (12, 16, 3)
    assert a.min() >= 0 and a.max() <= 255
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_random_shift_is_a_zero_filled_shift():
    image = np.random.default_rng(0).integers(1, 256, (12, 12, 3))
    shifts = set()
    for seed in range(20):
        shifted = data.random_shift(image, 2, seed=seed).numpy()
        padded = np.pad(image, ((2, 2), (2, 2), (0, 0)))
        matches = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if np.array_equal(shifted, padded[dy : dy + 12, dx : dx + 12])
        ]
        assert len(matches) == 1
        shifts.add(matches[0])
    assert len(shifts) > 5
    np.testing.assert_array_equal(data.random_shift(image, 0, seed=0), image)


def test_color_jitter_semantics():
    image = np.random.default_rng(0).uniform(10, 120, (8, 8, 3))
    identity = data.random_color_jitter(image, seed=0, probability=0.0)
    np.testing.assert_allclose(identity.numpy(), image, atol=1e-3)
    factors = []
    for seed in range(10):
        bright = data.random_color_jitter(
            image, seed, contrast=0, saturation=0, hue=0, probability=1.0
        ).numpy()
        ratio = bright / image
        np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-4)
        factors.append(ratio.flat[0])
    assert 0.6 <= min(factors) < max(factors) <= 1.4
    grey = np.repeat(image[..., :1], 3, axis=-1)
    saturated = data.random_color_jitter(
        grey, 1, brightness=0, contrast=0, hue=0, probability=1.0
    )
    np.testing.assert_allclose(saturated.numpy(), grey, atol=1e-3)
    full = data.random_color_jitter(np.full((4, 4, 3), 250.0), seed=5).numpy()
    assert full.min() >= 0.0 and full.max() <= 255.0


def test_pretraining_augment_flip_and_normalisation():
    image = np.random.default_rng(0).integers(0, 256, (16, 16, 3))
    flipped = 0
    for seed in range(8):
        out = data.pretraining_augment(image, 16, seed=seed, crop_mode="resize")
        out = out.numpy()
        assert out.shape == (16, 16, 3) and out.dtype == np.float32
        if np.allclose(out, numpy_normalize(image[:, ::-1]), atol=1e-4):
            flipped += 1
        else:
            np.testing.assert_allclose(out, numpy_normalize(image), atol=1e-4)
    assert 0 < flipped < 8


# Pre-training pipelines.


def test_digits_pipeline_shapes_and_determinism():
    make = lambda seed: data.pretraining_dataset(  # noqa: E731
        "digits", batch_size=8, seed=seed
    )
    first, second = take(make(0), 2), take(make(0), 2)
    other = take(make(1), 2)
    assert first[0].shape == (8, 16, 16, 3) and first[0].dtype == np.float32
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])
    assert first[0].min() >= (-MEAN / STD).min() - 1e-5
    assert first[0].max() <= ((1 - MEAN) / STD).max() + 1e-5


def test_digits_pipeline_shifts_the_train_digits():
    images, _ = data.load_digits_images(16)
    train = images[data.digits_split_indices(len(images), "train", 0.3)]
    dataset = data.pretraining_dataset(
        "digits", batch_size=6, shuffle=False, repeat=False
    )
    batch = denormalize(take(dataset, 1)[0])
    for augmented, original in zip(batch, train):
        padded = np.pad(original, ((2, 2), (2, 2), (0, 0)))
        assert any(
            np.array_equal(augmented, padded[dy : dy + 16, dx : dx + 16])
            for dy in range(5)
            for dx in range(5)
        )
    total = sum(len(b) for b in dataset)
    assert total == (len(train) // 6) * 6


def test_photos_pipeline_crops_come_from_train_regions():
    dataset = data.pretraining_dataset(
        "photos",
        image_size=8,
        photo_size=32,
        batch_size=4,
        shuffle=False,
        repeat=False,
        horizontal_flip=False,
        crops_per_image=2,
    )
    photos = data.resized_photos(32)
    crops = denormalize(np.concatenate(take(dataset, 2)))
    for i, crop in enumerate(crops):
        photo = photos[i // 2]
        _, stop = data.photo_region(photo.shape[1], "train")
        windows = np.lib.stride_tricks.sliding_window_view(
            photo.astype("float64"), (8, 8, 3)
        )[:, :, 0]
        match = np.argwhere((windows == crop).all(axis=(-3, -2, -1)))
        assert len(match) and (match[:, 1] + 8 <= stop).all()


def test_photos_pipeline_with_color_jitter_and_resized_crop():
    dataset = data.pretraining_dataset(
        "photos",
        image_size=(16, 24),
        batch_size=4,
        color_jitter=True,
        crop_mode="resized_crop",
    )
    batch = take(dataset, 1)[0]
    assert batch.shape == (4, 16, 24, 3) and np.isfinite(batch).all()


def test_folder_pipeline(class_folder):
    folder, _ = class_folder
    (folder / "notes.txt").write_text("not an image")
    dataset = data.pretraining_dataset(
        str(folder), image_size=16, batch_size=4, seed=3
    )
    first, again = (
        take(dataset, 3),
        take(
            data.pretraining_dataset(
                str(folder), image_size=16, batch_size=4, seed=3
            ),
            3,
        ),
    )
    assert first[0].shape == (4, 16, 16, 3)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)


def test_tfds_source_with_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6):
        dataset = data.pretraining_dataset(
            "tfds:mnist", image_size=16, batch_size=4, data_dir=str(tmp_path)
        )
        assert take(dataset, 1)[0].shape == (4, 16, 16, 3)
        evaluation = data.evaluation_dataset(
            "tfds:mnist:test",
            labels="inferred",
            resize_size=32,
            crop_size=28,
            batch_size=4,
            data_dir=str(tmp_path),
        )
        images, labels = next(iter(evaluation))
        assert images.shape == (4, 28, 28, 3) and labels.shape == (4,)


def test_tfds_source_not_prepared(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(ValueError, match="not prepared"):
        data.pretraining_dataset("tfds:mnist", data_dir=str(tmp_path))
    with pytest.raises(ValueError, match="no dataset named"):
        data.pretraining_dataset("tfds:no_such_dataset_xyz")


# Probes.


def test_digits_probe_split():
    train_x, train_y = data.probe_dataset("digits", "train")
    test_x, test_y = data.probe_dataset("digits", "test")
    assert train_x.shape == (1258, 16, 16, 3) and test_x.shape[0] == 539
    assert train_y.dtype == np.int32 and train_x.dtype == np.float32
    train_index = data.digits_split_indices(1797, "train", 0.3)
    test_index = data.digits_split_indices(1797, "test", 0.3)
    assert not set(train_index) & set(test_index)
    assert len(set(train_index) | set(test_index)) == 1797
    images, labels = data.load_digits_images(16)
    np.testing.assert_array_equal(test_y, labels[test_index])
    np.testing.assert_allclose(
        test_x, numpy_normalize(images[test_index]), atol=1e-5
    )
    batches = data.probe_dataset("digits", "test", batch_size=100)
    assert sum(len(y) for _, y in batches) == 539


def test_photo_probe_regions_are_disjoint():
    kwargs = dict(image_size=32, crops_per_image=16, seed=0)
    train_labels, train_boxes = data.photo_crop_boxes("train", **kwargs)
    test_labels, test_boxes = data.photo_crop_boxes("test", **kwargs)
    photos = data.resized_photos(128)
    for label, photo in enumerate(photos):
        height, width = photo.shape[:2]
        train = train_boxes[train_labels == label]
        test = test_boxes[test_labels == label]
        assert len(train) == len(test) == 16
        boundary = int(round(width * 0.7))
        assert train[:, 1].min() >= 0 and train[:, 3].max() <= boundary
        assert test[:, 1].min() >= boundary and test[:, 3].max() <= width
        assert (train[:, 0] >= 0).all() and (test[:, 2] <= height).all()
        assert ((train[:, 2:] - train[:, :2]) == 32).all()
    images, labels = data.probe_dataset("photos", "test", crops_per_image=16)
    np.testing.assert_array_equal(labels, test_labels)
    top, left, bottom, right = test_boxes[5]
    expected = photos[test_labels[5]][top:bottom, left:right]
    np.testing.assert_allclose(images[5], numpy_normalize(expected), atol=1e-5)
    again, _ = data.probe_dataset("photos", "test", crops_per_image=16)
    np.testing.assert_array_equal(images, again)
    _, other_boxes = data.photo_crop_boxes("test", 32, 16, seed=1)
    assert not np.array_equal(test_boxes, other_boxes)


def test_folder_probe(class_folder):
    folder, colours = class_folder
    train_x, train_y = data.probe_dataset(str(folder), "train", image_size=12)
    test_x, test_y = data.probe_dataset(str(folder), "test", image_size=12)
    assert train_x.shape == (4, 12, 12, 3) and test_x.shape == (2, 12, 12, 3)
    assert sorted(train_y.tolist()) == [0, 0, 1, 1]
    assert sorted(test_y.tolist()) == [0, 1]
    for images, labels in ((train_x, train_y), (test_x, test_y)):
        for image, label in zip(images, labels):
            colour = colours[["cat", "dog"][label]]
            np.testing.assert_allclose(
                image,
                numpy_normalize(np.broadcast_to(colour, image.shape)),
                atol=1e-4,
            )


def test_presplit_folder_probe(tmp_path):
    for split, count in (("train", 3), ("test", 2)):
        for name in ("a", "b"):
            for i in range(count):
                write_png(
                    str(tmp_path / split / name / f"{i}.png"),
                    np.zeros((10, 10, 3), "uint8"),
                )
    _, train_y = data.probe_dataset(str(tmp_path), "train", image_size=8)
    _, test_y = data.probe_dataset(str(tmp_path), "test", image_size=8)
    assert train_y.tolist() == [0, 0, 0, 1, 1, 1]
    assert test_y.tolist() == [0, 0, 1, 1]
    (tmp_path / "only").mkdir()
    os.rename(tmp_path / "train", tmp_path / "only" / "train")
    with pytest.raises(ValueError, match="split"):
        data.probe_dataset(str(tmp_path / "only"), "test", image_size=8)


# Evaluation.


def pil_evaluation(image, resize_size, crop_size):
    height, width = image.shape[:2]
    if height <= width:
        new = (int(resize_size * width / height), resize_size)
    else:
        new = (resize_size, int(resize_size * height / width))
    resized = np.asarray(Image.fromarray(image).resize(new, Image.BICUBIC))
    top = int(round((resized.shape[0] - crop_size) / 2.0))
    left = int(round((resized.shape[1] - crop_size) / 2.0))
    crop = resized[top : top + crop_size, left : left + crop_size]
    return numpy_normalize(crop)


def assert_close_to_pil(result, expected):
    """Within two grey levels, and within one for 99.9% of the values.

    PIL resizes in two separable passes and rounds to uint8 after each, so
    an exact float computation may differ by one level and, rarely (on fine
    detail in a photo shrunk 7x), by two.
    """
    levels = np.abs(result - expected) * STD * 255.0
    assert levels.max() <= 2.0 + 1e-3
    assert np.mean(levels <= 1.0 + 1e-3) >= 0.999


@pytest.mark.large(backend="tensorflow")
def test_evaluation_transform_matches_pil_and_converter():
    photos = dict(data.load_sample_photos())
    converter = AIMImageConverter(resize_size=64, crop_size=56)
    for name in ("chelsea", "rocket", "camera"):
        image = photos[name]
        result = data.evaluation_transform(image, 64, 56).numpy()
        assert result.shape == (56, 56, 3)
        expected = pil_evaluation(image, 64, 56)
        assert_close_to_pil(result, expected)
        from_layer = to_numpy(converter(image[None]))[0]
        np.testing.assert_allclose(result, from_layer, atol=ONE_GREY_LEVEL)


def test_evaluation_dataset_from_arrays_and_folder(class_folder):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 40, 50, 3)).astype("uint8")
    batches = list(
        data.evaluation_dataset(
            images, labels=[2, 0, 1], resize_size=32, crop_size=28, batch_size=2
        )
    )
    assert [tuple(x.shape) for x, _ in batches] == [
        (2, 28, 28, 3),
        (1, 28, 28, 3),
    ]
    assert np.concatenate([y for _, y in batches]).tolist() == [2, 0, 1]
    mixed = [images[0], images[1, :30], images[2, :, :41]]
    (got,) = list(data.evaluation_dataset(mixed, crop_size=20))
    assert got.shape == (3, 20, 20, 3)
    for image, row in zip(mixed, np.asarray(got)):  # each one on its own
        (alone,) = list(data.evaluation_dataset(image[None], crop_size=20))
        np.testing.assert_array_equal(row, np.asarray(alone)[0])
    with pytest.raises(ValueError, match="empty list"):
        data.evaluation_dataset([])
    with pytest.raises(ValueError, match=r"channels; got \[1, 3\]"):
        data.evaluation_dataset([images[0], images[1, :, :, :1]])
    folder, colours = class_folder
    dataset = data.evaluation_dataset(
        str(folder), labels="inferred", resize_size=16, crop_size=16
    )
    ((x, y),) = list(dataset)
    assert x.shape == (6, 16, 16, 3) and y.numpy().tolist() == [0] * 3 + [1] * 3
    np.testing.assert_allclose(
        x[0],
        numpy_normalize(np.broadcast_to(colours["cat"], (16, 16, 3))),
        atol=1e-4,
    )


# Bad inputs.


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"source": "imagenet"}, "source"),
        ({"source": 3}, "source"),
        ({"source": "tfds:"}, "source"),
        ({"image_size": 0}, "image_size"),
        ({"image_size": -4}, "image_size"),
        ({"image_size": "big"}, "image_size"),
        ({"batch_size": 0}, "batch_size"),
        ({"crops_per_image": 0}, "crops_per_image"),
        ({"crop_mode": "zoom"}, "crop_mode"),
        ({"crop_mode": "resized_crop", "scale": (0.0, 1.0)}, "scale"),
        ({"max_shift": -1}, "max_shift"),
        (
            {"source": "photos", "image_size": 64, "photo_size": 40},
            "photo_size",
        ),
    ],
)
def test_pretraining_dataset_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.pretraining_dataset(**kwargs)


def test_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("nothing here")
    with pytest.raises(ValueError, match="without images"):
        data.pretraining_dataset(str(tmp_path))
    with pytest.raises(ValueError, match="without images"):
        data.evaluation_dataset(str(tmp_path))
    with pytest.raises(ValueError, match="subfolder"):
        data.probe_dataset(str(tmp_path))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"split": "validation"}, "split"),
        ({"test_fraction": 1.5}, "test_fraction"),
        ({"batch_size": -1}, "batch_size"),
        ({"source": "photos", "photo_size": 40}, "photo_size"),
        ({"source": "photos", "crops_per_image": 0}, "crops_per_image"),
        ({"source": "tfds:mnist"}, "evaluation_dataset"),
    ],
)
def test_probe_dataset_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.probe_dataset(**kwargs)


def test_evaluation_dataset_bad_arguments():
    images = np.zeros((2, 20, 20, 3), "uint8")
    with pytest.raises(ValueError, match="crop_size"):
        data.evaluation_dataset(images, resize_size=16, crop_size=24)
    with pytest.raises(ValueError, match="labels"):
        data.evaluation_dataset(images, labels=[1, 2, 3])
    with pytest.raises(ValueError, match="labels"):
        data.evaluation_dataset(images, labels="inferred")
    with pytest.raises(ValueError, match="source"):
        data.evaluation_dataset("/no/such/folder")
    with pytest.raises(ValueError, match="batch_size"):
        data.evaluation_dataset(images, batch_size=0)
