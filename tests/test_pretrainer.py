"""AIMPretrainer and AIMPixelHead: objective, training, saving, errors."""

import doctest
import os

import keras
import numpy as np
import pytest
from conftest import to_numpy
from harness import run_model_test
from reference import gelu
from reference import layer_norm
from reference import numpy_sincos_2d
from test_losses import np_loss
from test_losses import np_patches
from test_losses import np_unpatchify

import keras_aim
from keras_aim.layers.masks import sample_prefix_lengths
from keras_aim.layers.pixel_head import AIMPixelHead
from keras_aim.layers.token_orders import token_order
from keras_aim.models.aim.aim_pretrainer import EVALUATION_SEED
from keras_aim.models.aim.aim_pretrainer import AIMPretrainer
from keras_aim.optimizers import PretrainingAdamW
from keras_aim.optimizers import pretraining_optimizer

P, SIZE, GRID = 4, 16, 4
N = GRID * GRID


def make_backbone(channels=1, image_shape=None, dtype=None):
    return keras_aim.AIMBackbone(
        image_shape=image_shape or (SIZE, SIZE, channels),
        patch_size=P,
        hidden_dim=32,
        num_layers=2,
        num_heads=2,
        dtype=dtype,
    )


def make_pretrainer(channels=1, **kwargs):
    kwargs.setdefault("head_hidden_dim", 32)
    kwargs.setdefault("head_num_layers", 1)
    backbone = make_backbone(channels, kwargs.pop("image_shape", None))
    return AIMPretrainer(backbone, **kwargs)


@pytest.fixture(scope="module")
def digits():
    """sklearn's 8x8 digits, upsampled to 16x16 and standardised."""
    from sklearn.datasets import load_digits

    images = load_digits().images.astype("float32") / 16.0
    images = np.kron(images, np.ones((1, 2, 2), "float32"))[..., None]
    return ((images - images.mean()) / images.std()).astype("float32")


def random_images(batch=2, channels=1, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, SIZE, SIZE, channels)).astype("float32")


# --- AIMPixelHead -----------------------------------------------------------


def np_head(head, tokens, grid, order=None):
    """Independent NumPy forward of the pixel head from its weights."""
    w = {v.path.split("/", 1)[1]: to_numpy(v) for v in head.weights}
    x = tokens @ w["proj/kernel"] + w["proj/bias"]
    table = numpy_sincos_2d(*grid, head.hidden_dim)
    x = x + (table if order is None else table[order])[None]
    for i in range(head.num_layers):
        h = layer_norm(x, w[f"block_{i}_norm/gamma"], w[f"block_{i}_norm/beta"])
        x = (
            x
            + gelu(h @ w[f"block_{i}_fc1/kernel"]) @ w[f"block_{i}_fc2/kernel"]
        )
    x = layer_norm(x, w["norm/gamma"], w["norm/beta"])
    return x @ w["output/kernel"] + w["output/bias"]


def test_pixel_head_matches_numpy_and_round_trips():
    head = AIMPixelHead(32, 48, num_layers=2, name="pixel_head")
    tokens = np.random.default_rng(0).normal(size=(2, 6, 16)).astype("f4")
    out = to_numpy(head(tokens, grid_size=(2, 3)))
    np.testing.assert_allclose(out, np_head(head, tokens, (2, 3)), atol=2e-5)
    assert sorted(v.path for v in head.weights) == sorted(
        ["pixel_head/proj/kernel", "pixel_head/proj/bias"]
        + [
            f"pixel_head/block_{i}_{name}"
            for i in range(2)
            for name in ("norm/gamma", "norm/beta", "fc1/kernel", "fc2/kernel")
        ]
        + ["pixel_head/norm/gamma", "pixel_head/norm/beta"]
        + ["pixel_head/output/kernel", "pixel_head/output/bias"]
    )
    clone = AIMPixelHead.from_config(head.get_config())
    assert clone.get_config() == head.get_config()
    clone.build((None, None, 16))
    clone.set_weights(head.get_weights())
    np.testing.assert_allclose(to_numpy(clone(tokens, grid_size=(2, 3))), out)
    with pytest.raises(ValueError, match="grid_size"):
        head(tokens)  # 6 tokens: not a square grid
    with pytest.raises(ValueError, match="divisible by 4"):
        AIMPixelHead(30, 48)


def test_pixel_head_token_order_permutes_the_position_table():
    head = AIMPixelHead(32, 48, num_layers=1)
    tokens = np.random.default_rng(1).normal(size=(2, 12, 16)).astype("f4")
    order = token_order("spiral", 3, 4)
    raster = to_numpy(head(tokens, grid_size=(3, 4)))
    ordered = to_numpy(
        head(tokens[:, order], grid_size=(3, 4), token_order=order)
    )
    np.testing.assert_allclose(ordered, raster[:, order], atol=1e-5)
    expected = np_head(head, tokens[:, order], (3, 4), order)
    np.testing.assert_allclose(ordered, expected, atol=2e-5)


def test_linear_head_is_one_dense_layer():
    head = AIMPixelHead(32, 48, num_layers=0, name="pixel_head")
    tokens = np.random.default_rng(2).normal(size=(2, 4, 16)).astype("f4")
    out = to_numpy(head(tokens))
    assert sorted(v.path for v in head.weights) == [
        "pixel_head/output/bias",
        "pixel_head/output/kernel",
    ]
    kernel, bias = (to_numpy(w) for w in head.get_weights())
    np.testing.assert_allclose(out, tokens @ kernel + bias, atol=1e-5)


def test_model_harness(tmp_path):
    pretrainer = make_pretrainer(seed=1)
    images = random_images(2)
    half = AIMPretrainer(
        make_backbone(dtype="mixed_bfloat16"),
        head_hidden_dim=32,
        head_num_layers=1,
    )
    run_model_test(
        pretrainer,
        images,
        [(2, N, P * P), (2,)],
        tmp_path,
        mixed_precision_model=half,
        fit_data=(images, None),
        compile_kwargs=dict(optimizer="adamw"),
        symbolic=False,
    )


def test_pixel_head_mixed_precision():
    head = AIMPixelHead(32, 48, num_layers=1, dtype="mixed_bfloat16")
    out = head(np.zeros((1, 4, 16), "float32"))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert head.block_fc1s[0].dtype_policy.name == "mixed_bfloat16"
    assert all(v.dtype == "float32" for v in head.weights)


# --- AIMPretrainer: the objective --------------------------------------------


@pytest.mark.parametrize("name", ["raster", "checkerboard"])
def test_call_and_loss_agree_with_numpy(name):
    # Eager tests share one input shape: JAX compiles each op per shape.
    pretrainer = make_pretrainer(token_order=name)
    images = random_images(2)
    out = pretrainer({"images": images})  # a dict works like the array
    prefix_lengths = keras.ops.convert_to_numpy(out["prefix_lengths"])
    assert prefix_lengths.shape == (2,)
    assert np.all((prefix_lengths >= 1) & (prefix_lengths <= N - 1))
    predictions = to_numpy(out["predictions"])
    assert predictions.shape == (2, N, P * P)
    again = pretrainer.predict_next_patches(images, prefix_lengths)
    np.testing.assert_allclose(to_numpy(again), predictions, atol=1e-5)
    loss = pretrainer.compute_loss(x=images, y_pred=out)
    order = token_order(name, GRID, GRID)
    permuted = np_unpatchify(np_patches(images, P)[:, order], P, 4, 4, 1)
    expected = np_loss(permuted, predictions, prefix_lengths, P)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    with pytest.raises(ValueError, match="'images'"):
        pretrainer({"pixels": images})


@pytest.mark.parametrize("name", ["raster", "random"])
def test_predictions_never_see_the_patch_they_predict(name):
    pretrainer = make_pretrainer(token_order=name, token_order_seed=4)
    order = token_order(name, GRID, GRID, seed=4)
    images = random_images(2, seed=3)
    prefix = 3
    base = to_numpy(pretrainer.predict_next_patches(images, prefix))[0]
    for position in (3, 7, N - 1):  # sequence positions past the prefix
        changed = images.copy()
        row, col = divmod(int(order[position]), GRID)
        changed[:, row * P : (row + 1) * P, col * P : (col + 1) * P] += 3.0
        out = to_numpy(pretrainer.predict_next_patches(changed, prefix))[0]
        delta = np.abs(out - base).max(axis=-1)
        # Row position - 1 predicts this patch: it and earlier rows are blind.
        np.testing.assert_allclose(delta[:position], 0.0, atol=1e-6)
        assert np.all(delta[position:] > 1e-5)


def test_causal_attention_uses_prefix_zero():
    pretrainer = make_pretrainer(attention="causal")
    images = random_images(2)
    out = pretrainer(images, training=True)
    k = keras.ops.convert_to_numpy(out["prefix_lengths"])
    np.testing.assert_array_equal(k, [0, 0])
    loss = pretrainer.compute_loss(x=images, y_pred=out)
    expected = np_loss(images, to_numpy(out["predictions"]), [1, 1], P)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_prefix_sampling_per_batch_in_training_per_image_otherwise():
    """`prefix_sampling="batch"`: one length shared by the batch in
    training, the loss on that length; evaluation draws per image from
    the fixed seed, as the default does. (That the shared length varies
    from step to step: tests/test_masks.py, on the drawing function.)"""
    per_batch = make_pretrainer(prefix_sampling="batch", seed=0)
    images = random_images(6)
    out = per_batch(images, training=True)
    k = keras.ops.convert_to_numpy(out["prefix_lengths"])
    assert k.shape == (6,) and len(set(k.tolist())) == 1
    assert 1 <= k[0] <= N - 1
    loss = per_batch.compute_loss(x=images, y_pred=out)
    expected = np_loss(images, to_numpy(out["predictions"]), k, P)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)
    # Evaluation: the default's per-image draw from the fixed seed.
    evaluation = keras.ops.convert_to_numpy(per_batch(images)["prefix_lengths"])
    expected = sample_prefix_lengths(6, 1, N - 1, EVALUATION_SEED)
    np.testing.assert_array_equal(evaluation, to_numpy(expected))
    assert len(set(evaluation.tolist())) > 1


def test_prefix_sampling_per_batch_trains_through_fit():
    """The shared length inside the compiled train step, with a batch
    dimension unknown at trace time (tf.data on TensorFlow)."""
    import tensorflow as tf

    pretrainer = make_pretrainer(prefix_sampling="batch", seed=1)
    pretrainer.compile(optimizer=pretraining_optimizer(4, batch_size=4))
    data = tf.data.Dataset.from_tensor_slices(random_images(8)).batch(4)
    history = pretrainer.fit(data, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][-1])


def test_reconstruct_keeps_the_prefix_and_the_shape():
    pretrainer = make_pretrainer(token_order="spiral")
    images = random_images(2)
    rebuilt = to_numpy(pretrainer.reconstruct(images, [5, 1]))
    assert rebuilt.shape == images.shape
    order = token_order("spiral", GRID, GRID)
    original, patches = np_patches(images, P), np_patches(rebuilt, P)
    np.testing.assert_allclose(patches[0, order[:5]], original[0, order[:5]])
    np.testing.assert_allclose(patches[1, order[:1]], original[1, order[:1]])
    assert not np.allclose(patches[1, order[1:]], original[1, order[1:]])


@pytest.mark.parametrize("order_name", ["raster", "checkerboard"])
def test_reconstruct_from_perfect_predictions_gives_the_image(order_name):
    # Row i predicts patch i + 1; a perfect prediction de-normalised with
    # the statistics of the patch it predicts must give that patch back.
    pretrainer = make_pretrainer(token_order=order_name)
    images = random_images(2, seed=3)
    order = token_order(order_name, GRID, GRID)
    patches = np_patches(images, P).astype("float64")[:, order]
    mean = patches.mean(-1, keepdims=True)
    std = np.sqrt(patches.var(-1, ddof=1, keepdims=True) + 1e-6)
    normalised = (patches - mean) / std
    perfect = np.concatenate(
        [normalised[:, 1:], np.zeros_like(normalised[:, :1])], axis=1
    ).astype("float32")
    pretrainer.predict_next_patches = lambda images, prefix_lengths: perfect
    rebuilt = to_numpy(pretrainer.reconstruct(images, [1, 3]))
    np.testing.assert_allclose(rebuilt, images, atol=1e-4)


# --- AIMPretrainer: training -------------------------------------------------


class BatchLosses(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.losses = []

    def on_train_batch_end(self, batch, logs=None):
        self.losses.append(float(logs["loss"]))


EPOCHS, BATCH = 4, 32


def digits_run(images, epochs=EPOCHS):
    """A fresh seeded pretrainer with the paper's recipe, fitted in order."""
    keras.utils.set_random_seed(3)
    pretrainer = make_pretrainer(seed=7)
    pretrainer.compile(
        optimizer=pretraining_optimizer(
            total_steps=EPOCHS * 512 // BATCH,
            batch_size=BATCH,
            base_learning_rate=3e-3,
            base_batch_size=BATCH,
            warmup_fraction=0.05,
        )
    )
    callback = BatchLosses()
    history = pretrainer.fit(
        images,
        batch_size=BATCH,
        epochs=epochs,
        shuffle=False,
        callbacks=[callback],
        verbose=0,
    )
    return pretrainer, history, callback.losses


@pytest.fixture(scope="module")
def trained(digits):
    """One run shared by the training tests (each fit compiles a step)."""
    held_out = digits[-128:]
    keras.utils.set_random_seed(3)
    before = make_pretrainer(seed=7)
    before.compile()
    loss_before = before.evaluate(held_out, batch_size=64, verbose=0)
    pretrainer, history, batch_losses = digits_run(digits[:512])
    return dict(
        pretrainer=pretrainer,
        history=history.history,
        batch_losses=batch_losses,
        before=loss_before,
        after=pretrainer.evaluate(held_out, batch_size=64, verbose=0),
        again=pretrainer.evaluate(held_out, batch_size=64, verbose=0),
    )


def test_fit_lowers_the_loss_on_digits_and_evaluate_works(trained):
    before, after = trained["before"], trained["after"]
    epochs = trained["history"]["loss"]
    print(
        f"\n[{keras.backend.backend()}] digits 16x16 held-out next-patch "
        f"loss {before:.3f} -> {after:.3f}; train epochs "
        + " ".join(f"{v:.3f}" for v in epochs)
    )
    assert len(trained["batch_losses"]) == EPOCHS * 512 // BATCH
    assert np.all(np.isfinite(trained["batch_losses"]))
    assert after < 0.8 * before
    assert epochs[-1] < epochs[0]
    assert trained["again"] == after  # evaluation draws are fixed


def test_same_seed_gives_the_same_first_steps(digits, trained):
    # A second fresh model, same seeds, on the same first two batches.
    _, _, losses = digits_run(digits[: 2 * BATCH], epochs=1)
    assert losses == trained["batch_losses"][:2]
    # Another seed draws other prefix lengths (checked eagerly: no compile).
    images = digits[:2]
    draws = [
        keras.ops.convert_to_numpy(
            make_pretrainer(seed=seed)(images, training=True)["prefix_lengths"]
        )
        for seed in (7, 7, 8)
    ]
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.array_equal(draws[0], draws[2])


def test_mixed_bfloat16_fit_step_on_a_tf_data_pipeline():
    tf = pytest.importorskip("tensorflow")
    backbone = make_backbone(dtype="mixed_bfloat16")
    pretrainer = AIMPretrainer(backbone, head_hidden_dim=32, head_num_layers=1)
    assert pretrainer.pixel_head.dtype_policy.name == "mixed_bfloat16"
    pretrainer.compile(optimizer=pretraining_optimizer(4, 4))
    images = random_images(8)
    pairs = tf.data.Dataset.from_tensor_slices((images, np.arange(8)))
    history = pretrainer.fit(pairs.batch(4), shuffle=False, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert all(v.dtype == "float32" for v in pretrainer.trainable_variables)
    # A dataset of raw images is refused before any step runs.
    raw = tf.data.Dataset.from_tensor_slices(
        (images * 40 + 100).astype("uint8")
    )
    with pytest.raises(ValueError, match="float images"):
        pretrainer.fit(raw.batch(4), epochs=1, verbose=0)


# --- AIMPretrainer: config, saving, errors -----------------------------------


def test_config_round_trip_and_saving(tmp_path):
    pretrainer = make_pretrainer(
        token_order="random",
        token_order_seed=2,
        prefix_range=(2, 9),
        prefix_sampling="batch",
        seed=5,
    )
    config = pretrainer.get_config()
    assert config["prefix_sampling"] == "batch"
    clone = AIMPretrainer.from_config(config)
    assert clone.get_config() == config
    assert type(clone.backbone) is keras_aim.AIMBackbone
    images = random_images(2)
    expected = to_numpy(pretrainer.predict_next_patches(images, [2, 9]))

    path = os.path.join(tmp_path, "pretrainer.keras")
    pretrainer.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is AIMPretrainer and loaded.prefix_range == (2, 9)
    got = to_numpy(loaded.predict_next_patches(images, [2, 9]))
    np.testing.assert_array_equal(got, expected)

    weights = os.path.join(tmp_path, "pretrainer.weights.h5")
    pretrainer.save_weights(weights)
    clone.load_weights(weights)
    got = to_numpy(clone.predict_next_patches(images, [2, 9]))
    np.testing.assert_array_equal(got, expected)


def test_variable_image_size_checks_the_prefix_range_on_arrival():
    images = random_images(2)
    pretrainer = make_pretrainer(image_shape=(None, None, 1))
    out = pretrainer(np.zeros((2, 20, 12, 1), "float32"))  # 15 patches
    assert tuple(out["predictions"].shape) == (2, 15, P * P)
    strict = make_pretrainer(image_shape=(None, None, 1), prefix_range=(1, 16))
    with pytest.raises(ValueError, match="prefix_range"):
        strict(images)  # 16 patches: K <= 15


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(prefix_range=(0, 5)), "prefix_range"),
        (dict(prefix_range=(6, 5)), "prefix_range"),
        (dict(prefix_range=(1, N)), "prefix_range"),
        (dict(prefix_range=5), "prefix_range"),
        (dict(attention="bidirectional"), "bidirectional"),
        (dict(attention="full"), "attention"),
        (dict(token_order="zigzag"), "token_order"),
        (dict(prefix_sampling="row"), "prefix_sampling"),
        (dict(seed="0"), "seed"),
    ],
)
def test_bad_configuration_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_pretrainer(**kwargs)


def test_bad_inputs_raise():
    pretrainer = make_pretrainer()
    with pytest.raises(ValueError, match="keras_aim.AIMBackbone"):
        AIMPretrainer(keras.Sequential([keras.layers.Dense(2)]))
    with pytest.raises(ValueError, match="loss"):
        pretrainer.compile(optimizer="adamw", loss="mse")
    pretrainer.compile(optimizer="adamw")
    uint8 = (random_images(4) * 40 + 100).astype("uint8")
    with pytest.raises(ValueError, match="normalise"):
        pretrainer.fit(uint8, batch_size=2, verbose=0)
    with pytest.raises(ValueError, match="channels"):
        pretrainer.fit(random_images(4, channels=3), batch_size=2, verbose=0)
    with pytest.raises(ValueError, match="channels"):
        pretrainer.predict_next_patches(random_images(2, channels=3), 1)
    with pytest.raises(ValueError, match="divisible"):
        pretrainer.predict_next_patches(np.zeros((1, 18, 16, 1), "f4"), 1)
    with pytest.raises(ValueError, match="float images"):
        pretrainer.predict_next_patches(uint8, 1)


@pytest.mark.parametrize(
    "module_name",
    [
        "layers.token_orders",
        "losses",
        "optimizers.pretraining",
        "optimizers.layer_decay",
        "layers.pixel_head",
    ],
)
def test_docstring_examples_run(module_name):
    import importlib

    module = importlib.import_module(f"keras_aim.{module_name}")
    globs = dict(keras=keras, np=np, keras_aim=keras_aim)
    result = doctest.testmod(module, extraglobs=globs)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.large
def test_pretrainer_docstring_example_runs():
    from keras_aim.models.aim import aim_pretrainer as pretrainer

    globs = dict(keras=keras, np=np, keras_aim=keras_aim)
    result = doctest.testmod(pretrainer, extraglobs=globs)
    assert result.attempted > 0 and result.failed == 0


def test_a_trained_model_saves_with_its_optimizer(trained, tmp_path):
    pretrainer = trained["pretrainer"]
    path = os.path.join(tmp_path, "trained.keras")
    pretrainer.save(path)
    loaded = keras.saving.load_model(path)
    images = random_images(2)
    np.testing.assert_array_equal(
        to_numpy(loaded.predict_next_patches(images, [3, 4])),
        to_numpy(pretrainer.predict_next_patches(images, [3, 4])),
    )
    assert type(loaded.optimizer) is PretrainingAdamW
    assert loaded.optimizer.no_weight_decay_names == (
        pretrainer.optimizer.no_weight_decay_names
    )
    assert int(loaded.optimizer.iterations) == EPOCHS * 512 // BATCH
    # The prefix-length stream continues where training stopped.
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(loaded.seed_generator.state),
        keras.ops.convert_to_numpy(pretrainer.seed_generator.state),
    )
