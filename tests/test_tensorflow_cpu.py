"""`keras_aim.utils.tensorflow_cpu`: TensorFlow's inter-op threads set to
one before TensorFlow starts (by `import keras_aim` and by the scripts)."""

import os
import subprocess
import sys
import types

import pytest

from keras_aim.utils import tensorflow_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fake_keras(backend):
    return types.SimpleNamespace(
        backend=types.SimpleNamespace(backend=lambda: backend)
    )


@pytest.mark.parametrize(
    "environ,modules,changed",
    [
        ({"KERAS_BACKEND": "tensorflow"}, {}, True),
        ({"KERAS_BACKEND": "jax"}, {}, False),
        ({"KERAS_BACKEND": "torch"}, {}, False),
        ({}, {}, True),  # Keras' default backend
        ({}, {"keras": fake_keras("tensorflow")}, True),  # loaded
        ({"KERAS_BACKEND": "tensorflow"}, {"keras": fake_keras("jax")}, False),
        # The user's choice, whatever its value (0: TensorFlow's default):
        (
            {"KERAS_BACKEND": "tensorflow", "TF_NUM_INTEROP_THREADS": "0"},
            {},
            False,
        ),
        (
            {"KERAS_BACKEND": "tensorflow", "TF_NUM_INTEROP_THREADS": "4"},
            {},
            False,
        ),
        (
            {"KERAS_BACKEND": "tensorflow", "TF_NUM_INTEROP_THREADS": ""},
            {},
            False,
        ),
    ],
)
def test_one_op_at_a_time_only_on_tensorflow_unless_the_user_chose(
    tmp_path, environ, modules, changed
):
    environ = dict(environ, KERAS_HOME=str(tmp_path / "no_home"))
    before = dict(environ)
    assert tensorflow_cpu.one_op_at_a_time(environ, modules) is changed
    if changed:
        assert environ == dict(before, TF_NUM_INTEROP_THREADS="1")
    else:
        assert environ == before


@pytest.mark.parametrize(
    "config,expected",
    [
        (None, "tensorflow"),  # Keras' default
        ('{"backend": "jax"}', "jax"),
        ('{"floatx": "float32"}', "tensorflow"),
        ("{not json", "tensorflow"),
        ('["jax"]', "tensorflow"),
    ],
)
def test_backend_name_as_keras_resolves_it(tmp_path, config, expected):
    if config is not None:
        (tmp_path / "keras.json").write_text(config)
    environ = {"KERAS_HOME": str(tmp_path)}
    assert tensorflow_cpu.keras_backend_name(environ, {}) == expected
    environ["KERAS_BACKEND"] = "torch"  # the variable wins over the file
    assert tensorflow_cpu.keras_backend_name(environ, {}) == "torch"
    loaded = {"keras": fake_keras("jax")}  # and a loaded Keras over both
    assert tensorflow_cpu.keras_backend_name(environ, loaded) == "jax"


def python(code, backend="tensorflow"):
    """Runs `code` in a fresh interpreter, without the user's choice."""
    env = {k: v for k, v in os.environ.items() if k != tensorflow_cpu.VARIABLE}
    env.update(PYTHONPATH=ROOT, KERAS_BACKEND=backend)
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.split()


def test_the_scripts_set_it_before_keras_loads():
    """`scaffold` (every script's first import) sets the switch without
    loading Keras, so that `--help` stays fast."""
    code = (
        "import os, sys; sys.path.insert(0, 'examples'); import scaffold; "
        "print(os.environ.get('TF_NUM_INTEROP_THREADS', 'unset'), "
        "'keras' in sys.modules, 'tensorflow' in sys.modules)"
    )
    assert python(code) == ["1", "False", "False"]
    assert python(code, "torch") == ["unset", "False", "False"]


@pytest.mark.large(backend="tensorflow")
@pytest.mark.skipif(
    not os.path.isdir("/proc/self/task"), reason="reads Linux thread names"
)
def test_import_keras_aim_leaves_tensorflow_one_inter_op_thread():
    """After `import keras_aim`, TensorFlow's runtime starts with one
    inter-op thread (its pool's threads are named `tf_Compute`); without
    the setting it starts one per core (two or more here)."""
    count = (
        "import collections, os, tensorflow as tf; "
        "x = tf.ones((64, 64)); tf.matmul(x, x); "
        "names = [open(f'/proc/self/task/{t}/comm').read().strip() "
        "for t in os.listdir('/proc/self/task')]; "
        "print(names.count('tf_Compute'))"
    )
    assert python(f"import keras_aim; {count}") == ["1"]
    if (os.cpu_count() or 1) > 1:
        assert int(python(count)[0]) > 1  # the check can fail
