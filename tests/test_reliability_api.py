"""Round two, class 7: call-time arguments, generated for every entry point.

Batches of 0 images, complex values, Python lists and tuples, integer and
boolean images go to the backbone (`__call__`, `encode`,
`extract_features`), the classifier, the pretrainer, `Patchify` and the
loss; booleans, floats, strings and out-of-range values go where block
indices, prefix lengths and patch counts are expected. Each is a
`ValueError` (through `keras_aim.utils.validation`) naming the argument
and the value; valid values of the same kinds (NumPy integers, one length
broadcast, `K = N` for the mask) still work and match NumPy.
"""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

import keras_aim
from keras_aim.layers import prefix_causal_mask
from keras_aim.losses import next_patch_pixel_loss

SOME = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
SIZE, PATCH, DEPTH = 8, 4, 2
N = (SIZE // PATCH) ** 2


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    arch = dict(
        image_shape=(SIZE, SIZE, 3),
        patch_size=PATCH,
        hidden_dim=16,
        num_layers=DEPTH,
        num_heads=2,
    )
    backbone = keras_aim.AIMBackbone(**arch)
    classifier = keras_aim.AIMImageClassifier(
        keras_aim.AIMBackbone(**arch), num_classes=3, probe_layers=[1]
    )
    pretrainer = keras_aim.AIMPretrainer(
        keras_aim.AIMBackbone(**arch), head_hidden_dim=16, head_num_layers=1
    )
    return backbone, classifier, pretrainer


def entry_points(models):
    backbone, classifier, pretrainer = models
    predictions = np.zeros((2, N, PATCH * PATCH * 3), "float32")
    return {
        "backbone": lambda x: backbone(x),
        "encode": lambda x: backbone.encode(x),
        "extract_features": lambda x: backbone.extract_features(x, [0]),
        "classifier": lambda x: classifier(x),
        "predict_next_patches": lambda x: pretrainer.predict_next_patches(x, 1),
        "Patchify": lambda x: keras_aim.layers.Patchify(PATCH)(x),
        "loss": lambda x: next_patch_pixel_loss(x, predictions, 1, PATCH),
    }


ENTRY_POINTS = (
    "backbone",
    "encode",
    "extract_features",
    "classifier",
    "predict_next_patches",
    "Patchify",
    "loss",
)


@st.composite
def bad_images(draw):
    """`(kind, images, words)`: bad images and what the message must say."""
    kind = draw(st.sampled_from(["empty", "complex", "list", "tuple", "int"]))
    batch = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    good = rng.normal(size=(batch, SIZE, SIZE, 3)).astype("float32")
    if kind == "empty":
        return kind, good[:0], ["empty", "0 examples"]
    if kind == "complex":
        dtype = draw(st.sampled_from(["complex64", "complex128"]))
        return kind, (good + 1j * good).astype(dtype), ["complex"]
    if kind == "int":
        dtype = draw(st.sampled_from(["uint8", "int32", "bool"]))
        return kind, (np.abs(good) * 50).astype(dtype), [dtype]
    nested = draw(st.booleans())
    value = good.tolist() if nested else list(good)
    return kind, value if kind == "list" else tuple(value), [kind]


@SOME
@given(case=bad_images(), entry=st.sampled_from(ENTRY_POINTS))
def test_bad_image_batches_are_refused_everywhere(models, case, entry):
    kind, images, words = case
    if entry == "loss" and kind in ("list", "tuple"):
        return  # a function of arrays, like keras.ops: array-likes are fine
    if entry == "Patchify" and kind == "int":
        return  # cutting integer images into patches is well defined
    with pytest.raises(ValueError) as error:
        entry_points(models)[entry](images)
    message = str(error.value)
    assert "images" in message, message
    for word in words:
        assert word in message, (entry, message)
    assert "Exception encountered" not in message  # not wrapped by Keras


# --- Block indices ------------------------------------------------------------

bad_index = st.one_of(
    st.booleans(),
    st.just(np.bool_(True)),
    st.floats(-3, 3),
    st.text(max_size=3),
    st.none(),
    st.integers(DEPTH, 10**6),
    st.integers(-(10**6), -DEPTH - 1),
    st.just([[0]]),
    st.dictionaries(st.integers(0, 1), st.integers(0, 1), max_size=1),
)


@SOME
@given(
    bad=bad_index,
    good=st.lists(st.integers(-DEPTH, DEPTH - 1), max_size=2),
    at=st.integers(0, 2),
    alone=st.booleans(),
)
def test_block_indices_must_be_integers_in_range(models, bad, good, at, alone):
    backbone = models[0]
    layers = bad if alone else good[:at] + [bad] + good[at:]
    images = np.zeros((1, SIZE, SIZE, 3), "float32")
    with pytest.raises(ValueError) as error:
        backbone.extract_features(images, layers)
    message = str(error.value)
    assert "`layers`" in message and repr(bad) in message, message


@settings(max_examples=10, deadline=None)
@given(
    layers=st.lists(
        st.one_of(
            st.integers(-DEPTH, DEPTH - 1),
            st.integers(-DEPTH, DEPTH - 1).map(np.int64),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_valid_block_indices_of_any_integer_type_work(models, layers):
    backbone = models[0]
    images = np.random.default_rng(0).normal(size=(1, SIZE, SIZE, 3))
    images = images.astype("float32")
    got = backbone.extract_features(images, layers)
    every = backbone.extract_features(images, list(range(DEPTH)))
    for value, index in zip(got, layers):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(value),
            keras.ops.convert_to_numpy(every[int(index) % DEPTH]),
            atol=1e-6,
        )
    with pytest.raises(ValueError, match="`layers`"):
        backbone.extract_features(images, [])


# --- Prefix lengths and patch counts ------------------------------------------


@st.composite
def bad_prefix(draw, maximum):
    """`(batch, prefix_lengths)`: lengths wrong for a batch of `batch`."""
    batch = draw(st.integers(1, 3))
    ints = st.integers(0, maximum)
    kind = draw(
        st.sampled_from(
            ["count", "2d", "float", "bool", "negative", "large", "other"]
        )
    )
    if kind == "count":
        count = draw(st.integers(0, 5).filter(lambda c: c != batch))
        value = draw(st.lists(ints, min_size=count, max_size=count))
    elif kind == "2d":
        value = np.full((batch, draw(st.integers(1, 2))), 1)
    elif kind == "float":
        value = draw(st.one_of(st.floats(0, maximum), st.just([1.0] * batch)))
        value = np.asarray(value, "float32") if draw(st.booleans()) else value
    elif kind == "bool":
        value = draw(st.one_of(st.booleans(), st.just([True] * batch)))
    elif kind == "negative":
        value = draw(
            st.lists(st.integers(-(10**6), -1), min_size=batch, max_size=batch)
        )
    elif kind == "large":
        value = draw(st.integers(maximum + 1, 10**9))
    else:
        value = draw(st.one_of(st.none(), st.text(max_size=3)))
    return batch, value


def images_of(batch):
    rng = np.random.default_rng(batch)
    return rng.normal(size=(batch, SIZE, SIZE, 3)).astype("float32")


@SOME
@given(case=bad_prefix(N - 1), where=st.sampled_from(["pretrainer", "loss"]))
def test_bad_prefix_lengths_are_refused(models, case, where):
    batch, prefix = case
    images = images_of(batch)
    with pytest.raises(ValueError, match="`prefix_lengths`"):
        if where == "pretrainer":
            models[2].predict_next_patches(images, prefix)
        else:
            predictions = np.zeros((batch, N, PATCH * PATCH * 3), "float32")
            next_patch_pixel_loss(images, predictions, prefix, PATCH)


@SOME
@given(case=bad_prefix(N))
def test_the_mask_refuses_bad_prefix_lengths(case):
    _, prefix = case
    if (
        np.ndim(prefix) == 0
        and not isinstance(prefix, (bool, str))
        and (prefix is not None and np.asarray(prefix).dtype.kind in "iu")
    ):
        prefix = [prefix]  # the mask takes a list; the scalar is out of range
    if (
        isinstance(prefix, list)
        and len(prefix)
        and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= N
            for v in prefix
        )
    ):
        return  # a wrong count is no error for the mask (it has no batch)
    with pytest.raises(ValueError, match="`prefix_lengths`"):
        prefix_causal_mask(prefix, N)


@SOME
@given(
    num=st.one_of(
        st.floats(-10, 10),
        st.booleans(),
        st.text(max_size=3),
        st.none(),
        st.integers(-(10**6), 0),
        st.just(np.float64(4.0)),
    )
)
def test_the_mask_refuses_patch_counts_that_are_not_positive_ints(num):
    with pytest.raises(ValueError, match="`num_patches`") as error:
        prefix_causal_mask([1], num)
    assert repr(num) in str(error.value)


@SOME
@given(
    num=st.integers(1, 12),
    data=st.data(),
    numpy_ints=st.booleans(),
)
def test_valid_masks_match_numpy(num, data, numpy_ints):
    prefix = data.draw(st.lists(st.integers(0, num), min_size=1, max_size=3))
    given_prefix = np.asarray(prefix, "int64") if numpy_ints else prefix
    given_num = np.int32(num) if numpy_ints else num
    mask = keras.ops.convert_to_numpy(
        prefix_causal_mask(given_prefix, given_num)
    )
    i, j = np.arange(num)[:, None], np.arange(num)[None, :]
    expected = np.stack([(j <= i) | (j < k) for k in prefix])
    np.testing.assert_array_equal(mask, expected)


@settings(max_examples=10, deadline=None)
@given(batch=st.integers(1, 3), prefix=st.integers(0, N - 1))
@pytest.mark.large(backend="tensorflow")
def test_one_prefix_length_is_broadcast_to_the_batch(models, batch, prefix):
    pretrainer = models[2]
    images = images_of(batch)
    one = keras.ops.convert_to_numpy(
        pretrainer.predict_next_patches(images, np.int64(prefix))
    )
    each = keras.ops.convert_to_numpy(
        pretrainer.predict_next_patches(images, [prefix] * batch)
    )
    np.testing.assert_allclose(one, each, atol=1e-6)
