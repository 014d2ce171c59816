"""Round two, class 5: damage that must be recognised as damage.

A `state.json` that is valid JSON with wrong types, missing keys, values
out of range or file names outside the checkpoint is damage
(`CheckpointDamagedError`, naming the file), never a raw `TypeError`, so
the fallback to the newest intact checkpoint takes over. Sharded (Orbax)
checkpoints get the same checks as local ones: the schema, the SHA-256 of
every file Orbax wrote, and finite weights.
"""

import json
import os
import shutil
import warnings

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck
from hypothesis import assume
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from keras_aim import training
from keras_aim.training import checkpoint_checks
from keras_aim.utils.errors import CheckpointDamagedError
from keras_aim.utils.errors import SettingsError

SOME = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
HEX = "0" * 64


def small_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), verbose=0)
    return model


def kernel(model):
    return keras.ops.convert_to_numpy(model.layers[0].kernel)


def save_two(manager, model):
    """Checkpoints at steps 1 and 2 with different kernels; step 1's kernel."""
    model.layers[0].kernel.assign(np.full((3, 2), 1.0))
    manager.save(1, model)
    first = kernel(model)
    model.layers[0].kernel.assign(np.full((3, 2), 2.0))
    manager.save(2, model)
    return first


# --- Wrong values, generated --------------------------------------------------

junk = st.one_of(
    st.none(),
    st.booleans(),
    st.text(max_size=5),
    st.floats(),
    st.lists(st.integers(), min_size=1, max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
not_a_dict = junk.filter(lambda v: not isinstance(v, dict))
not_a_string = junk.filter(lambda v: not isinstance(v, str))
bad_records = st.one_of(
    junk.filter(lambda v: not isinstance(v, list)),
    st.lists(junk, min_size=1, max_size=2),
    st.sampled_from(
        [
            [{"path": 1, "shape": [2], "dtype": "float32"}],
            [{"path": "a", "shape": [-1], "dtype": "float32"}],
            [{"path": "a", "shape": [1.5], "dtype": "float32"}],
            [{"path": "a", "shape": "2", "dtype": "float32"}],
            [{"path": "a", "shape": [2], "dtype": None}],
            [{"path": "a", "shape": [True]}],
        ]
    ),
)
WRONG = {
    "format": st.one_of(
        junk.filter(lambda v: v is not None), st.integers(-5, 0)
    ),
    "step": st.one_of(junk, st.integers(-(10**6), -1)),
    "fingerprint": not_a_dict,
    "metadata": not_a_dict,
    "extra": st.one_of(
        not_a_dict,
        st.fixed_dictionaries({"log_every": not_a_string}).filter(
            lambda v: (
                not isinstance(v["log_every"], int)
                or isinstance(v["log_every"], bool)
            )
        ),
        st.fixed_dictionaries({"window_state": st.text(max_size=3)}),
        st.just({"window_state": [[1, "x"]]}),
    ),
    "model_variables": bad_records,
    "optimizer_variables": bad_records,
    "keras_backend": not_a_string,
    "time": not_a_string,
    "orbax": junk.filter(lambda v: not isinstance(v, bool)),
    "processes": st.one_of(
        junk.filter(lambda v: v is not None), st.integers(-3, 0)
    ),
    "sha256": st.one_of(
        junk.filter(lambda v: v is not None),
        st.sampled_from(
            [
                {"../model.weights.h5": HEX},
                {"/etc/hostname": HEX},
                {"model.weights.h5": "zz"},
                {"a\\b": HEX},
                {"": HEX},
                {},
            ]
        ),
    ),
}
REQUIRED = ("step", "model_variables", "optimizer_variables", "sha256")


def mutations():
    return st.one_of(
        *(st.tuples(st.just("set"), st.just(k), v) for k, v in WRONG.items()),
        st.tuples(st.just("drop"), st.sampled_from(REQUIRED), st.none()),
        st.tuples(st.just("whole"), st.none(), not_a_dict),
        st.tuples(
            st.just("raw"),
            st.none(),
            st.sampled_from([b"\xff\xfe{", b"[" * 100000, b"", b'{"step":']),
        ),
    )


def mutate(state_path, mutation):
    how, key, value = mutation
    if how == "raw":
        with open(state_path, "wb") as f:
            f.write(value)
        return
    with open(state_path) as f:
        state = json.load(f)
    if how == "set":
        state[key] = value
    elif how == "drop":
        del state[key]
    else:
        state = value
    with open(state_path, "w") as f:
        json.dump(state, f)


@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("two")
    model = small_model()
    first = save_two(training.CheckpointManager(folder, max_to_keep=3), model)
    return folder, model, first


@SOME
@given(mutation=mutations())
def test_a_state_json_with_wrong_types_is_damage_and_falls_back(
    tmp_path_factory, two_checkpoints, mutation
):
    source, model, first = two_checkpoints
    folder = tmp_path_factory.mktemp("run") / "checkpoints"
    shutil.copytree(source, folder)
    manager = training.CheckpointManager(folder, max_to_keep=3)
    newest = manager.latest()
    state_path = os.path.join(newest, "state.json")
    mutate(state_path, mutation)
    with pytest.raises(CheckpointDamagedError) as error:
        manager.verify(newest)
    assert "state.json" in str(error.value) or "model.weights" in str(
        error.value
    )
    model.layers[0].kernel.assign(np.zeros((3, 2)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = manager.restore_latest_valid(model)
    assert state["step"] == 1
    np.testing.assert_array_equal(kernel(model), first)
    assert any("Skipping a damaged" in str(w.message) for w in caught)
    assert os.path.isdir(os.path.join(folder, "damaged_step_00000002"))


@settings(max_examples=10, deadline=None)
@given(version=st.integers(3, 10**6))
@pytest.mark.large(backend="torch")
def test_a_newer_format_is_a_settings_error_not_damage(
    tmp_path_factory, version
):
    folder = tmp_path_factory.mktemp("newer")
    manager = training.CheckpointManager(folder)
    path = manager.save(1, small_model())
    mutate(os.path.join(path, "state.json"), ("set", "format", version))
    with pytest.raises(SettingsError, match="newer") as error:
        manager.restore_latest_valid(small_model())
    assert not isinstance(error.value, CheckpointDamagedError)
    assert os.path.isdir(path)  # not set aside as damaged


def test_the_validator_keeps_what_it_accepts():
    state = {
        "step": 3,
        "model_variables": [{"path": "a/b", "shape": [2], "dtype": "f"}],
        "optimizer_variables": [],
        "sha256": {"model.weights.h5": HEX, "orbax_state/d/x": HEX},
        "extra": {"log_every": 5, "window_state": [[1.0, 2], 3]},
    }
    assert checkpoint_checks.validate_state(dict(state), "s")["format"] == 1


# --- Orbax --------------------------------------------------------------------

ORBAX_KINDS = ("flip", "delete", "truncate", "nan", "schema", "unlisted")


@pytest.fixture(scope="module")
def orbax_checkpoints(tmp_path_factory):
    if keras.backend.backend() != "jax":
        pytest.skip("Orbax checkpoints are written on jax")
    pytest.importorskip("orbax.checkpoint")
    from keras_aim.distribution.orbax_state import ShardedCheckpointManager

    good = tmp_path_factory.mktemp("orbax_good")
    model = small_model()
    first = save_two(ShardedCheckpointManager(good, max_to_keep=3), model)
    # Non-finite optimizer moments pass `save` (it checks the model's
    # weights); a restore must still refuse them, with valid checksums.
    nan = tmp_path_factory.mktemp("orbax_nan")
    nan_model = small_model()
    manager = ShardedCheckpointManager(nan, max_to_keep=3)
    nan_model.layers[0].kernel.assign(np.full((3, 2), 1.0))
    manager.save(1, nan_model)
    nan_first = kernel(nan_model)
    moment = [v for v in nan_model.optimizer.variables if len(v.shape) == 2][0]
    moment.assign(np.full(moment.shape, np.nan))
    manager.save(2, nan_model)
    return (
        ShardedCheckpointManager,
        (good, model, first),
        (
            nan,
            nan_model,
            nan_first,
        ),
    )


def orbax_files(path):
    with open(os.path.join(path, "state.json")) as f:
        return sorted(json.load(f)["sha256"])


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    kind=st.sampled_from(ORBAX_KINDS),
    where=st.floats(0.0, 1.0),
    mutation=mutations(),
)
def test_orbax_checkpoints_get_the_local_checks(
    tmp_path_factory, orbax_checkpoints, kind, where, mutation
):
    manager_cls, good, nan = orbax_checkpoints
    source, model, first = nan if kind == "nan" else good
    # Without its checksums an (older) Orbax checkpoint is still accepted.
    assume(kind != "schema" or mutation[:2] != ("drop", "sha256"))
    folder = tmp_path_factory.mktemp("orbax_run") / "checkpoints"
    shutil.copytree(source, folder)
    manager = manager_cls(folder, max_to_keep=3)
    newest = manager.latest()
    files = orbax_files(newest)
    assert files and all(f.startswith("orbax_state/") for f in files)
    files = [f for f in files if os.path.getsize(os.path.join(newest, f))]
    target = os.path.join(newest, files[int(where * (len(files) - 1))])
    if kind == "flip":
        with open(target, "r+b") as f:
            data = f.read()
            at = int(where * (len(data) - 1))
            f.seek(at)
            f.write(bytes([data[at] ^ 0x5A]))
    elif kind == "delete":
        os.remove(target)
    elif kind == "truncate":
        with open(target, "r+b") as f:
            f.truncate(max(0, os.path.getsize(target) - 1))
    elif kind == "schema":
        mutate(os.path.join(newest, "state.json"), mutation)
    elif kind == "unlisted":
        mutate(os.path.join(newest, "state.json"), ("set", "sha256", {}))
    if kind != "nan":
        with pytest.raises(CheckpointDamagedError):
            manager.verify(newest)
    model.layers[0].kernel.assign(np.zeros((3, 2)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = manager.restore_latest_valid(model)
    assert state["step"] == 1
    np.testing.assert_array_equal(kernel(model), first)
    messages = " ".join(str(w.message) for w in caught)
    assert "Skipping a damaged" in messages
    if kind == "nan":
        assert "non-finite" in messages


def test_old_orbax_checkpoints_without_checksums_still_check_finiteness(
    tmp_path, orbax_checkpoints
):
    manager_cls, _, (nan, model, first) = orbax_checkpoints
    folder = tmp_path / "checkpoints"
    shutil.copytree(nan, folder)
    manager = manager_cls(folder, max_to_keep=3)
    for _, path in manager.checkpoints():
        state_path = os.path.join(path, "state.json")
        with open(state_path) as f:
            state = json.load(f)
        del state["sha256"], state["sizes"]
        with open(state_path, "w") as f:
            json.dump(state, f)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state = manager.restore_latest_valid(model)
    assert state["step"] == 1
    messages = " ".join(str(w.message) for w in caught)
    assert "lists no checksums" in messages and "non-finite" in messages
