"""`keras_aim.utils.tensorflow_cpu`: TensorFlow's oneDNN off on AMX CPUs,
set before TensorFlow loads (by `import keras_aim` and by the scripts)."""

import os
import subprocess
import sys
import types

import pytest

from keras_aim.utils import tensorflow_cpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = "fpu sse avx512f avx512_bf16 amx_bf16 amx_int8"


def cpuinfo(tmp_path, flags):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\n")
    return str(path)


@pytest.mark.parametrize(
    "flags,expected",
    [
        (FLAGS + " amx_tile", True),
        ("amx_tile " + FLAGS, True),
        (FLAGS, False),  # bf16 and AMX's other flags, but no tiles
        (FLAGS + " amx_tile2", False),  # whole flags only
        ("", False),
    ],
)
def test_cpu_has_amx_reads_the_flags_line(tmp_path, flags, expected):
    assert tensorflow_cpu.cpu_has_amx(cpuinfo(tmp_path, flags)) is expected


def test_cpu_has_amx_without_cpuinfo(tmp_path):
    assert tensorflow_cpu.cpu_has_amx(str(tmp_path / "missing")) is False
    empty = tmp_path / "empty"
    empty.write_text("")
    assert tensorflow_cpu.cpu_has_amx(str(empty)) is False


def fake_keras(backend):
    return types.SimpleNamespace(
        backend=types.SimpleNamespace(backend=lambda: backend)
    )


@pytest.mark.parametrize(
    "environ,modules,amx,changed",
    [
        ({"KERAS_BACKEND": "tensorflow"}, {}, True, True),
        ({"KERAS_BACKEND": "tensorflow"}, {}, False, False),  # no AMX
        ({"KERAS_BACKEND": "jax"}, {}, True, False),  # torch keeps AMX
        ({"KERAS_BACKEND": "torch"}, {}, True, False),
        ({}, {"keras": fake_keras("tensorflow")}, True, True),  # loaded
        (
            {"KERAS_BACKEND": "tensorflow"},
            {"keras": fake_keras("jax")},
            True,
            False,
        ),
        # The user's choices, whatever their value:
        (
            {"KERAS_BACKEND": "tensorflow", "ONEDNN_MAX_CPU_ISA": "ALL"},
            {},
            True,
            False,
        ),
        (
            {"KERAS_BACKEND": "tensorflow", "ONEDNN_MAX_CPU_ISA": ""},
            {},
            True,
            False,
        ),
        (
            {"KERAS_BACKEND": "tensorflow", "TF_ENABLE_ONEDNN_OPTS": "1"},
            {},
            True,
            False,
        ),
    ],
)
def test_caps_onednn_only_on_tensorflow_on_amx_unless_the_user_chose(
    tmp_path, environ, modules, amx, changed
):
    environ = dict(environ, KERAS_HOME=str(tmp_path / "no_home"))
    before = dict(environ)
    info = cpuinfo(tmp_path, FLAGS + (" amx_tile" if amx else ""))
    result = tensorflow_cpu.cap_onednn_on_amx(environ, modules, info)
    assert result is changed
    if changed:
        assert environ == dict(before, ONEDNN_MAX_CPU_ISA="AVX512_CORE_BF16")
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
    """Runs `code` in a fresh interpreter, without the user's choices."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in tensorflow_cpu.USER_CHOICES
    }
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
        "print(os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset'), "
        "'keras' in sys.modules, 'tensorflow' in sys.modules)"
    )
    capped = "AVX512_CORE_BF16" if tensorflow_cpu.cpu_has_amx() else "unset"
    assert python(code) == [capped, "False", "False"]
    assert python(code, "torch") == ["unset", "False", "False"]


@pytest.mark.large(backend="tensorflow")
def test_import_keras_aim_keeps_tensorflow_off_amx():
    """`import keras_aim` sets it, and TensorFlow's oneDNN then runs
    without AMX (`ONEDNN_VERBOSE` names the kernel of a bfloat16 matmul)."""
    code = (
        "import os, keras_aim, tensorflow as tf; "
        "print('ISA', os.environ.get('ONEDNN_MAX_CPU_ISA', 'unset')); "
        "x = tf.ones((64, 64), tf.bfloat16); tf.matmul(x, x)"
    )
    out = python(f"import os; os.environ['ONEDNN_VERBOSE'] = '1'; {code}")
    if not tensorflow_cpu.cpu_has_amx():
        assert "ISA unset" in " ".join(out)
        return
    assert "ISA AVX512_CORE_BF16" in " ".join(out)
    kernels = [w for w in out if "brg_matmul" in w or "gemm" in w]
    assert kernels and not any("amx" in w for w in kernels), kernels
