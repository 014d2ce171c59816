"""Tests for AIMImageConverter (keras_aim.models.aim.aim_image_converter),
on every backend.

Resizing is checked against two independent implementations:
- PIL's bicubic resize (Keys cubic, a = -0.5, support widened when
  downsampling, fixed-point arithmetic, rounded to uint8 after each pass):
  the default `resampling="pillow"` gives its uint8 pixels exactly (more
  formats and sizes in test_eval_pixels.py);
- `tf.image.resize(..., "bicubic", antialias=True)` in float32, the same
  kernel in floating point, so the float path agrees to ~1e-2 grey levels,
  and `resampling="tf_image"` is that resize itself.
The crop and normalisation are checked exactly against NumPy.
"""

import json
import os

import keras
import numpy as np
import pytest
from conftest import to_numpy
from harness import run_layer_test
from PIL import Image

from keras_aim.models.aim.aim_image_converter import AIMImageConverter
from keras_aim.models.aim.aim_image_converter import load_image_converter

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
ONE_GREY_LEVEL = 1.0 / 255.0 / STD.min()


def smooth_image(height, width, seed=0):
    """A uint8 photo-like image: random colours upsampled by PIL."""
    small = np.random.default_rng(seed).integers(0, 256, (5, 7, 3))
    image = Image.fromarray(small.astype("uint8"))
    return np.asarray(image.resize((width, height), Image.BICUBIC))


def numpy_center_crop(image, crop_height, crop_width):
    """torchvision's CenterCrop arithmetic, written out with NumPy."""
    height, width = image.shape[-3:-1]
    top = int(round((height - crop_height) / 2.0))
    left = int(round((width - crop_width) / 2.0))
    return image[..., top : top + crop_height, left : left + crop_width, :]


def numpy_normalize(image):
    return (image.astype("float64") / 255.0 - MEAN) / STD


def pil_resize_short_side(image, size):
    """torchvision's Resize(int) on a PIL image."""
    height, width = image.shape[:2]
    if height <= width:
        new = (int(size * width / height), size)
    else:
        new = (size, int(size * height / width))
    return np.asarray(Image.fromarray(image).resize(new, Image.BICUBIC))


@pytest.mark.parametrize("shape", [(30, 40), (31, 44), (45, 33)])
def test_crop_and_normalize_match_numpy(shape):
    images = np.random.default_rng(1).integers(0, 256, (2, *shape, 3))
    images = images.astype("uint8")
    converter = AIMImageConverter(resize_size=None, crop_size=(20, 24))
    expected = numpy_normalize(numpy_center_crop(images, 20, 24))
    np.testing.assert_allclose(to_numpy(converter(images)), expected, atol=1e-5)


@pytest.mark.parametrize(
    "shape, resize_size, crop_size",
    [((60, 80), 30, 24), ((80, 60), 30, 24), ((37, 50), 90, 64)],
)
def test_resize_crop_normalize_match_pil(shape, resize_size, crop_size):
    image = smooth_image(*shape)
    expected = numpy_normalize(
        numpy_center_crop(
            pil_resize_short_side(image, resize_size), crop_size, crop_size
        )
    )
    converter = AIMImageConverter(resize_size=resize_size, crop_size=crop_size)
    result = to_numpy(converter(image[None]))[0]
    assert result.shape == expected.shape
    np.testing.assert_allclose(result, expected, atol=1e-5)


def test_float_resize_matches_tf_image():
    tf = pytest.importorskip("tensorflow")
    images = np.random.default_rng(2).uniform(0, 255, (2, 37, 53, 3))
    images = images.astype("float32")
    for resize_size in (20, 80):
        converter = AIMImageConverter(
            resize_size=resize_size, crop_size=None, mean=None, std=None
        )
        result = to_numpy(converter(images)) * 255.0
        expected = tf.image.resize(
            images, result.shape[1:3], method="bicubic", antialias=True
        ).numpy()
        np.testing.assert_allclose(result, expected, atol=1e-2)


def test_uint8_and_float_inputs_agree():
    image = smooth_image(50, 70)[None]
    converter = AIMImageConverter(resize_size=32, crop_size=28)
    from_uint8 = to_numpy(converter(image))
    from_float = to_numpy(converter(image.astype("float32")))
    # uint8 inputs are rounded and clipped to [0, 255] after each of the
    # two passes (like PIL); float inputs keep the bicubic overshoot.
    from_float = np.clip(from_float, -MEAN / STD, (1 - MEAN) / STD)
    np.testing.assert_allclose(
        from_uint8, from_float, atol=ONE_GREY_LEVEL + 1e-5
    )


@pytest.mark.parametrize(
    "shape, expected",
    [((50, 30), (66, 40)), ((30, 50), (40, 66)), ((40, 40), (40, 40))],
)
def test_short_side_resize_keeps_aspect_ratio(shape, expected):
    converter = AIMImageConverter(resize_size=40, crop_size=None)
    images = np.zeros((1, *shape, 3), "uint8")
    assert tuple(converter(images).shape) == (1, *expected, 3)
    assert converter.compute_output_shape((1, *shape, 3)) == (1, *expected, 3)


def test_non_square_crop_and_exact_resize():
    images = np.zeros((3, 50, 30, 3), "uint8")
    converter = AIMImageConverter(resize_size=40, crop_size=(48, 32))
    assert tuple(converter(images).shape) == (3, 48, 32, 3)
    exact = AIMImageConverter(resize_size=(20, 36), crop_size=None)
    assert tuple(exact(images).shape) == (3, 20, 36, 3)


def test_single_image():
    image = smooth_image(40, 60)
    converter = AIMImageConverter(resize_size=32, crop_size=28)
    single = to_numpy(converter(image))
    batched = to_numpy(converter(image[None]))[0]
    assert single.shape == (28, 28, 3)
    np.testing.assert_allclose(single, batched, atol=1e-6)


def test_symbolic_and_predict():
    inputs = keras.Input((40, 60, 3), dtype="uint8")
    converter = AIMImageConverter(resize_size=32, crop_size=28)
    outputs = converter(inputs)
    assert tuple(outputs.shape) == (None, 28, 28, 3)
    model = keras.Model(inputs, outputs)
    images = np.stack([smooth_image(40, 60, seed) for seed in range(3)])
    predicted = model.predict(images, verbose=0)
    np.testing.assert_allclose(
        predicted, to_numpy(converter(images)), atol=1e-5
    )
    free = keras.Input((None, None, 3))
    assert tuple(converter(free).shape) == (None, 28, 28, 3)


def test_grey_images_with_scalar_statistics():
    images = np.full((2, 10, 12, 1), 51, "uint8")
    converter = AIMImageConverter(
        resize_size=None, crop_size=8, mean=0.5, std=0.25
    )
    result = to_numpy(converter(images))
    assert result.shape == (2, 8, 8, 1)
    np.testing.assert_allclose(result, (0.2 - 0.5) / 0.25, atol=1e-6)


def test_bfloat16_policy():
    converter = AIMImageConverter(
        resize_size=20, crop_size=16, dtype="bfloat16"
    )
    result = converter(np.zeros((1, 24, 24, 3), "uint8"))
    assert keras.backend.standardize_dtype(result.dtype) == "bfloat16"


def test_config_round_trip(tmp_path):
    converter = AIMImageConverter(
        resize_size=64,
        crop_size=(48, 56),
        interpolation="bilinear",
        antialias=False,
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.25, 0.5),
        scale=1 / 127.5,
        name="converter",
    )
    config = converter.get_config()
    json.dumps(config)
    restored = AIMImageConverter.from_config(config)
    assert restored.get_config() == config
    images = np.stack([smooth_image(70, 90, seed) for seed in range(2)])
    np.testing.assert_allclose(
        to_numpy(restored(images)), to_numpy(converter(images)), atol=1e-6
    )
    serialized = keras.saving.serialize_keras_object(converter)
    assert serialized["registered_name"] == "keras_aim>AIMImageConverter"
    again = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(again, AIMImageConverter)
    assert again.get_config() == config


def test_save_to_preset_and_load(tmp_path):
    assert load_image_converter(str(tmp_path)) is None
    converter = AIMImageConverter(resize_size=36, crop_size=32)
    folder = os.path.join(tmp_path, "preset")
    converter.save_to_preset(folder)
    assert os.path.exists(os.path.join(folder, "image_converter.json"))
    loaded = load_image_converter(folder)
    assert isinstance(loaded, AIMImageConverter)
    assert loaded.get_config() == converter.get_config()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "image_converter.json").write_text("{not json")
    with pytest.raises(ValueError, match="image_converter.json"):
        load_image_converter(str(tmp_path / "bad"))


def test_inside_saved_model(tmp_path):
    inputs = keras.Input((30, 30, 3), dtype="uint8")
    outputs = AIMImageConverter(resize_size=24, crop_size=20)(inputs)
    model = keras.Model(inputs, outputs)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    images = smooth_image(30, 30)[None]
    np.testing.assert_allclose(
        to_numpy(loaded(images)), to_numpy(model(images)), atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"resize_size": 0}, "resize_size"),
        ({"resize_size": "big"}, "resize_size"),
        ({"crop_size": -3}, "crop_size"),
        ({"crop_size": (2, 3, 4)}, "crop_size"),
        ({"resize_size": 32, "crop_size": 48}, "crop_size"),
        ({"resize_size": (20, 40), "crop_size": (24, 24)}, "crop_size"),
        ({"interpolation": "lanczos7"}, "interpolation"),
        ({"std": (0.2, 0.0, 0.2)}, "std"),
        ({"mean": (0.1, 0.2), "std": (0.1, 0.2, 0.3)}, "mean"),
        ({"mean": "red"}, "mean"),
        ({"scale": "1/255"}, "scale"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        AIMImageConverter(**kwargs)


def test_bad_inputs():
    converter = AIMImageConverter(resize_size=None, crop_size=32)
    with pytest.raises(ValueError, match="crop_size"):
        converter(np.zeros((1, 20, 40, 3), "uint8"))
    with pytest.raises(ValueError, match="channels"):
        AIMImageConverter()(np.zeros((1, 300, 300, 1), "uint8"))
    with pytest.raises(ValueError, match="shape"):
        AIMImageConverter()(np.zeros((300, 300), "uint8"))


@pytest.mark.parametrize(
    "image_shape,resize,crop",
    [
        ((224, 224, 3), 256, (224, 224)),
        ((None, None, 3), 256, (224, 224)),
        ((112, 112, 3), 128, (112, 112)),
        ((28, 56, 3), 64, (28, 56)),
    ],
)
def test_default_image_converter_matches_the_model_input(
    image_shape, resize, crop
):
    from keras_aim.models.aim.aim_image_converter import default_image_converter

    converter = default_image_converter(image_shape)
    config = converter.get_config()
    assert config["resize_size"] == resize
    assert tuple(config["crop_size"]) == crop
    for raw_shape in ((1, 300, 400, 3), (1, 400, 300, 3)):
        raw = np.zeros(raw_shape, "uint8")
        assert tuple(converter(raw).shape) == (1, *crop, 3)


def test_layer_harness(tmp_path):
    images = np.random.default_rng(3).uniform(0, 255, (2, 40, 60, 3))
    run_layer_test(
        AIMImageConverter,
        dict(resize_size=32, crop_size=28),
        images.astype("float32"),
        (2, 28, 28, 3),
        run_training=False,
        tmp_path=tmp_path,
    )


def test_tf_transform_is_the_same_transform():
    """The tf.data path runs the converter's own code with tf ops."""
    images = np.random.default_rng(4).integers(0, 256, (3, 37, 53, 3))
    images = images.astype("uint8")
    for kwargs in (
        dict(resize_size=32, crop_size=28),
        dict(resize_size=(20, 36), crop_size=None),
        dict(resize_size=None, crop_size=(20, 24), mean=0.5, std=0.25),
    ):
        converter = AIMImageConverter(**kwargs)
        from_layer = to_numpy(converter(images))
        for i, image in enumerate(images):
            from_tf = np.asarray(converter.tf_transform(image))
            assert from_tf.shape == from_layer[i].shape
            # Pillow's pixels on both paths (the legacy tf_image resize
            # rounds apart by a grey level or two: tests below).
            np.testing.assert_allclose(from_tf, from_layer[i], atol=1e-5)


def test_legacy_tf_image_resampling():
    """`resampling="tf_image"` is tf.image.resize, as before issue 20."""
    tf = pytest.importorskip("tensorflow")
    images = np.random.default_rng(5).integers(0, 256, (2, 37, 53, 3))
    images = images.astype("uint8")
    converter = AIMImageConverter(
        resize_size=32,
        crop_size=None,
        mean=None,
        std=None,
        scale=1.0,
        resampling="tf_image",
    )
    expected = tf.image.resize(
        images.astype("float32"), (32, 45), "bicubic", antialias=True
    )
    expected = np.clip(np.round(expected.numpy()), 0, 255)
    np.testing.assert_allclose(to_numpy(converter(images)), expected, atol=1)
    for i, image in enumerate(images):
        np.testing.assert_allclose(
            converter.tf_transform(image), expected[i], atol=1e-4
        )
