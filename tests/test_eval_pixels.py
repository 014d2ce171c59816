"""Evaluation pixels against the release's pipeline (issue 20), per backend.

The reference is Pillow itself with torchvision's size and crop rules
written out (`pixel_reference.release_pixels`): real photos from
scikit-image's data folder and generated images in every format the
evaluation reads. Two of our paths are checked against it and against
each other: the API (`AIMImageConverter` on a decoded uint8 array, with
`keras.ops` on the backend under test) and the pipeline the examples use
(`labelled_images` / `evaluation_dataset`: files decoded by Pillow in
`tf.data`, resized there by Pillow).
"""

import math
import os

import keras
import numpy as np
import pytest
from PIL import Image
from pixel_reference import IMAGENET_MEAN
from pixel_reference import IMAGENET_STD
from pixel_reference import class_folder
from pixel_reference import compare
from pixel_reference import release_pixels
from pixel_reference import release_size
from pixel_reference import skimage_files
from pixel_reference import to_levels
from pixel_reference import write_format_images

from keras_aim import AIMImageConverter
from keras_aim.data import evaluation_dataset
from keras_aim.data import labelled_images
from keras_aim.data.decoding import pillow_rgb
from keras_aim.models.aim.aim_image_converter import center_crop_offsets
from keras_aim.models.aim.aim_image_converter import default_image_converter
from keras_aim.models.aim.aim_image_converter import load_image_converter
from keras_aim.models.aim.aim_image_converter import short_side_resize_shape
from keras_aim.utils.pil_resampling import resize_numpy
from keras_aim.utils.pil_resampling import vertical_first

FILTERS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


@pytest.fixture(scope="module")
def image_files(tmp_path_factory):
    """scikit-image's photos and every generated format, one class folder."""
    root = tmp_path_factory.mktemp("eval_pixels")
    photo = np.asarray(Image.open(skimage_files()[0]).convert("RGB"))
    generated = write_format_images(str(root / "generated"), photo)
    files = skimage_files() + list(generated.values())
    return class_folder(str(root / "folder"), files), str(root / "folder")


def api_levels(converter, path):
    with open(path, "rb") as f:
        pixels = pillow_rgb(f.read())
    return to_levels(keras.ops.convert_to_numpy(converter(pixels[None]))[0])


def summary(results):
    means = [r["mean"] for r in results]
    return {
        "mean": float(np.mean(means)),
        "max": max(r["max"] for r in results),
        "identical": float(np.mean([r["identical"] for r in results])),
    }


def check_summary(results):
    totals = summary(results)
    assert totals["mean"] <= 0.05, totals
    assert totals["max"] <= 1.0, totals
    assert totals["identical"] >= 0.9, totals


# torchvision's size and crop arithmetic, exact cases.


@pytest.mark.parametrize(
    "height, width, size, expected",
    [
        ((375, 500, 256, (256, 341))),  # 256 * 500 / 375 = 341.33
        ((500, 375, 256, (341, 256))),
        ((333, 500, 256, (256, 384))),  # 384.38
        ((300, 450, 256, (256, 384))),  # exactly 384
        ((700, 260, 256, (689, 256))),  # 689.23
        ((1, 1, 256, (256, 256))),
        ((10, 40, 256, (256, 1024))),
        ((480, 640, 384, (384, 512))),
        ((427, 640, 512, (512, 767))),  # 767.25
        ((256, 256, 256, (256, 256))),
    ],
)
def test_short_side_rule_cases(height, width, size, expected):
    assert short_side_resize_shape(height, width, size) == expected


def test_short_side_rule_matches_torchvision_formula():
    rng = np.random.default_rng(0)
    for height, width in rng.integers(1, 3000, (2000, 2)):
        height, width = int(height), int(width)
        for size in (256, 384, 512):
            short, long = min(height, width), max(height, width)
            new_long = int(size * long / short)  # torchvision's arithmetic
            expected = (size, new_long) if height <= width else (new_long, size)
            assert short_side_resize_shape(height, width, size) == expected


@pytest.mark.parametrize(
    "shape, crop, expected",
    [
        ((256, 341), 224, (16, 58)),  # 58.5 rounds half to even
        ((257, 224), 224, (16, 0)),  # 16.5 -> 16
        ((259, 226), 224, (18, 1)),  # 17.5 -> 18, 1.0
        ((384, 512), 336, (24, 88)),
        ((512, 767), 448, (32, 160)),  # 159.5 -> 160
        ((224, 224), 224, (0, 0)),
    ],
)
def test_center_crop_rule_cases(shape, crop, expected):
    torchvision = tuple(int(round((s - crop) / 2.0)) for s in shape)
    assert torchvision == expected
    assert center_crop_offsets(*shape, crop, crop) == expected


def test_release_sizes_for_224_336_448():
    for image_size, resize in ((224, 256), (336, 384), (448, 512)):
        assert release_size(image_size) == math.ceil(image_size / 0.875)
        converter = default_image_converter((image_size, image_size, 3))
        assert converter.resize_size == resize
        assert converter.crop_size == (image_size, image_size)
    for image_size in (16, 112, 192, 384, 518):  # 192 -> 220, not 219
        converter = default_image_converter((image_size, image_size, 3))
        assert converter.resize_size == release_size(image_size)


# Pillow's resize, re-implemented.


@pytest.mark.parametrize("interpolation", sorted(FILTERS))
def test_numpy_taps_match_pillow(interpolation):
    rng = np.random.default_rng(1)
    for _ in range(60):
        height, width, out_h, out_w = (int(v) for v in rng.integers(1, 160, 4))
        image = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
        expected = Image.fromarray(image).resize(
            (out_w, out_h), FILTERS[interpolation]
        )
        result = resize_numpy(image, (out_h, out_w), interpolation)
        np.testing.assert_array_equal(result, np.asarray(expected))


def test_pass_order_rule():
    # A tall image made short goes height first (Pillow >= 13).
    assert vertical_first(700, 280, 640, 256) is True  # 2 * 24 < 60
    assert vertical_first(700, 260, 689, 256) is True  # 2 * 4 < 11
    assert vertical_first(600, 400, 384, 256) is False  # 2 * 144 > 216
    assert vertical_first(200, 100, 100, 50) is False  # 2 * 50 == 100
    assert vertical_first(375, 500, 256, 341) is False
    assert vertical_first(100, 100, 200, 50) is False  # height grows


@pytest.mark.parametrize("interpolation", sorted(FILTERS))
@pytest.mark.large(backend="torch")
def test_converter_matches_pillow_on_arrays(interpolation):
    """The API path on the backend under test, and the tf.data path."""
    rng = np.random.default_rng(2)
    shapes = [(375, 500), (500, 375), (700, 280), (23, 31), (64, 64)]
    for height, width in shapes:
        image = rng.integers(0, 256, (height, width, 3)).astype(np.uint8)
        converter = AIMImageConverter(
            resize_size=64,
            crop_size=56,
            interpolation=interpolation,
            mean=None,
            std=None,
            scale=1.0,
        )
        size = short_side_resize_shape(height, width, 64)
        top, left = center_crop_offsets(*size, 56, 56)
        resized = Image.fromarray(image).resize(
            size[::-1], FILTERS[interpolation]
        )
        expected = np.asarray(resized)[top : top + 56, left : left + 56]
        result = keras.ops.convert_to_numpy(converter(image[None]))[0]
        np.testing.assert_array_equal(result, expected)
        np.testing.assert_array_equal(converter.tf_transform(image), expected)


def test_tf_taps_fallback_matches_pillow():
    """The tf-op taps (float images; no Pillow) give Pillow's pixels too."""
    import tensorflow as tf

    from keras_aim.models.aim.aim_image_ops import TFOps
    from keras_aim.models.aim.aim_image_ops import taps_resize

    image = np.random.default_rng(3).integers(0, 256, (300, 451, 3))
    image = image.astype(np.uint8)
    window = (16, 40, 224, 224)
    result = taps_resize(
        tf.constant(image, tf.float32),
        (256, 384),
        window,
        "bicubic",
        True,
        TFOps(),
    )
    expected = np.asarray(Image.fromarray(image).resize((384, 256), 3))
    np.testing.assert_array_equal(result, expected[16:240, 40:264])


def test_float_images_follow_pillow_float_mode():
    image = np.random.default_rng(4).uniform(0, 255, (90, 70, 2))
    image = image.astype(np.float32)
    converter = AIMImageConverter(
        resize_size=40, crop_size=None, mean=None, std=None, scale=1.0
    )
    result = keras.ops.convert_to_numpy(converter(image[None]))[0]
    size = short_side_resize_shape(90, 70, 40)
    for channel in range(2):
        plane = Image.fromarray(image[..., channel], mode="F")
        expected = np.asarray(plane.resize(size[::-1], 3))
        np.testing.assert_allclose(result[..., channel], expected, atol=2e-3)


# The release's pixels, file by file.


@pytest.mark.large(backend="tensorflow")
def test_api_and_pipeline_match_the_release(image_files):
    files, folder = image_files
    converter = AIMImageConverter()
    split = labelled_images(folder, "all", image_converter=converter)
    pipeline, _ = split.to_arrays()
    assert len(pipeline) == len(files) and not split.skipped
    stream = np.concatenate([np.asarray(b) for b in evaluation_dataset(folder)])
    api_results, pipeline_results = [], []
    for path, from_pipeline, from_stream in zip(files, pipeline, stream):
        reference = release_pixels(path)
        from_api = api_levels(converter, path)
        api_results.append(compare(from_api, reference))
        pipeline_results.append(compare(to_levels(from_pipeline), reference))
        # examples/evaluate.py's path and the API: the same pixels.
        np.testing.assert_allclose(from_pipeline, from_stream, atol=1e-6)
        np.testing.assert_allclose(
            to_levels(from_pipeline), from_api, atol=0.01
        )
    check_summary(api_results)
    check_summary(pipeline_results)


@pytest.mark.parametrize("image_size", [336, 448])
@pytest.mark.large(backend="tensorflow")
def test_larger_image_sizes_match_the_release(image_files, image_size):
    files, _ = image_files
    converter = default_image_converter((image_size, image_size, 3))
    chosen = files[::4]
    results = []
    for path in chosen:
        reference = release_pixels(path, image_size)
        from_api = api_levels(converter, path)
        assert from_api.shape == reference.shape
        results.append(compare(from_api, reference))
        with open(path, "rb") as f:
            pixels = pillow_rgb(f.read())
        from_tf = to_levels(converter.tf_transform(pixels))
        np.testing.assert_allclose(from_tf, from_api, atol=0.01)
    check_summary(results)


def test_normalisation_is_torchvision_arithmetic(image_files):
    """x / 255, minus the mean, over the std, in float32, as ToTensor does."""
    files, _ = image_files
    reference = release_pixels(files[0]).astype(np.float32) / np.float32(255)
    mean = IMAGENET_MEAN.astype(np.float32)
    expected = (reference - mean) / IMAGENET_STD.astype(np.float32)
    with open(files[0], "rb") as f:
        pixels = pillow_rgb(f.read())
    result = np.asarray(AIMImageConverter().tf_transform(pixels))
    np.testing.assert_allclose(result, expected, rtol=0, atol=1e-6)


def test_decoding_follows_pillow_rules(image_files):
    """Alpha dropped, first frame, EXIF ignored, CMYK read inverted."""
    files, _ = image_files
    by_name = {os.path.basename(f).split("_", 1)[1]: f for f in files}
    for name in ("rgba.png", "animated.gif", "exif_rotated.jpg", "rgb16.png"):
        with open(by_name[name], "rb") as f:
            decoded = pillow_rgb(f.read())
        with Image.open(by_name[name]) as image:
            np.testing.assert_array_equal(
                decoded, np.asarray(image.convert("RGB"))
            )
    with open(by_name["exif_rotated.jpg"], "rb") as f:
        assert pillow_rgb(f.read()).shape == (300, 450, 3)  # not rotated


def test_tfds_images_are_decoded_by_pillow(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=3):
        encoded = tfds.load(
            "mnist",
            split="test",
            data_dir=str(tmp_path),
            download=False,
            decoders={"image": tfds.decode.SkipDecoding()},
        )
        stream = evaluation_dataset(
            "tfds:mnist:test", batch_size=3, data_dir=str(tmp_path)
        )
        images = np.asarray(next(iter(stream)))
        converter = AIMImageConverter()
        for example, image in zip(encoded, images):
            pixels = pillow_rgb(example["image"].numpy())
            np.testing.assert_allclose(
                image, converter.tf_transform(pixels), atol=1e-6
            )


# Presets: image_converter.json written before this change still loads.


def test_old_image_converter_json_loads(tmp_path):
    old = {
        "module": "keras_aim.models.aim.aim_image_converter",
        "class_name": "AIMImageConverter",
        "config": {
            "name": "image_converter",
            "trainable": True,
            "dtype": "float32",
            "resize_size": 256,
            "crop_size": [224, 224],
            "interpolation": "bicubic",
            "antialias": True,
            "mean": [0.485, 0.456, 0.406],
            "std": [0.229, 0.224, 0.225],
            "scale": 1.0 / 255.0,
        },
        "registered_name": "keras_aim>AIMImageConverter",
    }
    import json

    (tmp_path / "image_converter.json").write_text(json.dumps(old))
    loaded = load_image_converter(str(tmp_path))
    assert loaded.resampling == "pillow" and loaded.crop_size == (224, 224)
    old["config"]["antialias"] = False
    (tmp_path / "image_converter.json").write_text(json.dumps(old))
    assert load_image_converter(str(tmp_path)).resampling == "tf_image"
    converter = AIMImageConverter(resampling="tf_image")
    converter.save_to_preset(str(tmp_path / "new"))
    again = load_image_converter(str(tmp_path / "new"))
    assert again.get_config() == converter.get_config()


def test_resampling_argument():
    assert AIMImageConverter().resampling == "pillow"
    # Pillow always antialiases: without it, tf.image.resize as before.
    assert AIMImageConverter(antialias=False).resampling == "tf_image"
    with pytest.raises(ValueError, match="resampling"):
        AIMImageConverter(resampling="opencv")
    with pytest.raises(ValueError, match="antialias"):
        AIMImageConverter(antialias=False, resampling="pillow")


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(resize_size=(40, 52), crop_size=None),
        dict(resize_size=48, crop_size=(40, 32), interpolation="bilinear"),
        dict(resize_size=None, crop_size=24),
        dict(resize_size=48, crop_size=40, resampling="tf_image"),
    ],
)
def test_decoding_in_one_step_is_the_same(image_files, kwargs):
    """`decode_and_convert` (decode, resize, crop in one Pillow call) is
    `tf_transform(decode_rgb(...))` for every converter geometry."""
    import tensorflow as tf

    from keras_aim.data.decoding import decode_and_convert
    from keras_aim.data.decoding import decode_rgb

    files, _ = image_files
    converter = AIMImageConverter(**kwargs)
    for path in files[::9]:
        contents = tf.io.read_file(path)
        expected = converter.tf_transform(decode_rgb(contents))
        result = decode_and_convert(contents, converter)
        np.testing.assert_allclose(result, expected, atol=1e-6)
