"""The shared test harness for keras_aim layers and models.

As keras-hub's `TestCase.run_layer_test`, every layer and model test runs
the same checks through one function: a config round trip that gives the
same outputs, symbolic and eager calls of the same shape, one `fit` step
that changes the weights, mixed precision, and save/load (`.keras`, and
preset folders for models that have them). Each check compares against the
object under test, so a broken `get_config`, a dropped dtype or a weight
left out of saving fails here.
"""

import keras
import numpy as np
from keras import tree


def _numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x), dtype="float64")


def assert_same_outputs(got, want, atol=0.0):
    """Every leaf of two (nested) outputs is equal within `atol`."""
    got_leaves, want_leaves = tree.flatten(got), tree.flatten(want)
    assert len(got_leaves) == len(want_leaves)
    for a, b in zip(got_leaves, want_leaves):
        a, b = _numpy(a), _numpy(b)
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=atol, rtol=0)


def _shapes(outputs):
    return [tuple(x.shape) for x in tree.flatten(outputs)]


def _symbolic_inputs(input_data):
    return tree.map_structure(
        lambda x: keras.Input(shape=x.shape[1:], batch_size=x.shape[0]),
        input_data,
    )


def run_layer_test(
    cls,
    init_kwargs,
    input_data,
    expected_output_shape,
    call_kwargs=None,
    run_training=True,
    run_mixed_precision=True,
    tmp_path=None,
):
    """Runs the standard checks on a layer class.

    Args:
        cls: the layer class.
        init_kwargs: constructor arguments.
        input_data: a float32 array (or list of arrays) with a batch axis.
        expected_output_shape: the output shape (a tuple).
        call_kwargs: extra call arguments (e.g. `grid_size`).
        run_training: fit one step of a model around the layer and check
            that its trainable weights move.
        run_mixed_precision: check `mixed_bfloat16` (bfloat16 outputs,
            float32 variables, finite values).
        tmp_path: a folder for the `.keras` round trip (skipped if `None`).

    Returns:
        The eager output of the layer under test.
    """
    call_kwargs = call_kwargs or {}
    layer = cls(**init_kwargs, name="under_test")
    eager = layer(input_data, **call_kwargs)
    assert tuple(eager.shape) == tuple(expected_output_shape)
    symbolic = cls(**init_kwargs)(_symbolic_inputs(input_data), **call_kwargs)
    assert tuple(symbolic.shape) == tuple(expected_output_shape)

    config = layer.get_config()
    clone = cls.from_config(config)
    assert clone.get_config() == config
    clone(input_data, **call_kwargs)
    clone.set_weights(layer.get_weights())
    assert_same_outputs(clone(input_data, **call_kwargs), eager, atol=1e-6)
    restored = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(layer)
    )
    assert type(restored) is cls

    if run_training or tmp_path is not None:
        inputs = _symbolic_inputs(input_data)
        outputs = cls(**init_kwargs)(inputs, **call_kwargs)
        outputs = keras.layers.Dense(1)(keras.layers.Flatten()(outputs))
        model = keras.Model(inputs, outputs)
    if run_training:
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        before = [_numpy(w) for w in model.layers[-3].trainable_weights]
        batch = tree.flatten(input_data)[0].shape[0]
        target = np.ones((batch, 1), "float32")
        history = model.fit(input_data, target, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        after = [_numpy(w) for w in model.layers[-3].trainable_weights]
        assert all(not np.array_equal(a, b) for a, b in zip(before, after))
    if tmp_path is not None:
        path = str(tmp_path / f"{cls.__name__}.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
        assert_same_outputs(loaded(input_data), model(input_data))

    if run_mixed_precision:
        half = cls(**init_kwargs, dtype="mixed_bfloat16")
        outputs = half(input_data, **call_kwargs)
        assert half.compute_dtype == "bfloat16"
        assert keras.backend.standardize_dtype(outputs.dtype) == "bfloat16"
        assert all(v.dtype == "float32" for v in half.trainable_weights)
        assert np.isfinite(_numpy(outputs)).all()
    return eager


def run_model_test(
    model,
    input_data,
    expected_output_shape,
    tmp_path,
    mixed_precision_model=None,
    fit_data=None,
    compile_kwargs=None,
    symbolic=True,
    preset=True,
):
    """Runs the standard checks on a built keras_aim model.

    Args:
        model: the model under test.
        input_data: a float32 batch.
        expected_output_shape: the output shape, or a list of shapes for
            nested outputs.
        tmp_path: a folder for the saved files.
        mixed_precision_model: the same model built with `mixed_bfloat16`,
            or `None` to skip that check.
        fit_data: `(x, y)` for one `fit` step, or `None`.
        compile_kwargs: `compile()` arguments for the `fit` step.
        symbolic: call the model on a `keras.Input` too (functional models).
        preset: check `save_to_preset` / `from_preset`.
    """
    outputs = model(input_data)
    shapes = _shapes(outputs)
    if isinstance(expected_output_shape, tuple):
        expected_output_shape = [expected_output_shape]
    assert shapes == [tuple(s) for s in expected_output_shape]
    if symbolic:
        spec = model(keras.Input(shape=input_data.shape[1:]))
        assert [s[1:] for s in _shapes(spec)] == [s[1:] for s in shapes]

    cls = type(model)
    config = model.get_config()
    clone = cls.from_config(config)
    assert type(clone) is cls
    clone.set_weights(model.get_weights())
    assert_same_outputs(clone(input_data), outputs)

    path = str(tmp_path / f"{cls.__name__}.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is cls
    assert_same_outputs(loaded(input_data), outputs)

    if preset and hasattr(model, "save_to_preset"):
        folder = str(tmp_path / f"{cls.__name__}_preset")
        model.save_to_preset(folder)
        assert_same_outputs(cls.from_preset(folder)(input_data), outputs)

    if fit_data is not None:
        trained = cls.from_config(config)
        trained.set_weights(model.get_weights())
        trained.compile(**(compile_kwargs or {}))
        before = [_numpy(w) for w in trained.trainable_weights]
        history = trained.fit(*fit_data, epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        after = [_numpy(w) for w in trained.trainable_weights]
        assert any(not np.array_equal(a, b) for a, b in zip(before, after))

    if mixed_precision_model is not None:
        half_outputs = mixed_precision_model(input_data)
        assert all(
            v.dtype == "float32"
            for v in mixed_precision_model.trainable_weights
        )
        leaves = tree.flatten(half_outputs)
        assert any(
            keras.backend.standardize_dtype(x.dtype) == "bfloat16"
            for x in leaves
        )
        assert all(np.isfinite(_numpy(x)).all() for x in leaves)
