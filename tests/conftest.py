"""Shared pytest setup: one backend per run (KERAS_BACKEND), tiny configs."""

import os
import sys
from argparse import SUPPRESS

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# First, so that its TensorFlow switch (`utils/tensorflow_cpu.py`) is set
# before any test runs TensorFlow; subprocesses inherit it.
import keras_aim  # noqa: E402


def pytest_addoption(parser):
    parser.addoption(
        "--run_large",
        action="store",
        nargs="?",
        const="all",
        default=None,
        choices=["all", "once"],
        help="also run tests marked `large`: `all` (the default when the "
        "option is given) on every backend, `once` only on the backend each "
        "test is about (`large(backend=...)`; backend-neutral ones on torch)",
    )
    parser.addoption(
        "--run_extra_large",
        action="store_true",
        default=False,
        help="also run tests marked `extra_large` (and every `large` one)",
    )
    parser.addoption(  # the old name of `--run_large`, kept as an alias
        "--run-slow", action="store_true", default=False, help=SUPPRESS
    )


def pytest_configure(config):
    global FAST_XLA
    FAST_XLA = configure_fast_xla()
    config.addinivalue_line(
        "markers",
        "large(backend=None): a heavy check (a subprocess, a training run); "
        "runs with --run_large; `backend` names the one backend that "
        "`--run_large=once` runs it on (default: torch)",
    )
    config.addinivalue_line(
        "markers",
        "extra_large: the heaviest checks; runs with --run_extra_large",
    )
    config.addinivalue_line("markers", "slow: an alias of `large`")


FAST_XLA = False
# Where `--run_large=once` runs a backend-neutral large test: torch, the
# cheapest backend for the suite's tiny models (measured with
# `--durations=0` on 2 cores: the fast tier took 256 core-seconds on torch,
# 516 on tensorflow and 937 on jax, which compiles every new shape).
NEUTRAL_BACKEND = "torch"


def large_tier(config):
    """`None` (skip large tests), `"once"` or `"all"`."""
    if config.getoption("--run_extra_large"):
        return "all"
    if config.getoption("--run-slow"):
        return "all"
    return config.getoption("--run_large")


def pytest_collection_modifyitems(config, items):
    import keras

    backend = keras.backend.backend()
    tier = large_tier(config)
    extra = config.getoption("--run_extra_large")
    for item in items:
        if "extra_large" in item.keywords:
            if not extra:
                item.add_marker(
                    pytest.mark.skip(reason="extra_large: --run_extra_large")
                )
            continue
        marker = item.get_closest_marker("large") or item.get_closest_marker(
            "slow"
        )
        if marker is None:
            continue
        if tier is None:
            item.add_marker(pytest.mark.skip(reason="large: --run_large"))
        elif tier == "once":
            about = marker.kwargs.get("backend", NEUTRAL_BACKEND)
            if about != backend:
                item.add_marker(
                    pytest.mark.skip(
                        reason=f"large, runs once: on {about} (--run_large)"
                    )
                )


def configure_fast_xla():
    """Whether jax runs with most XLA optimisations off.

    `make test` sets JAX's own `JAX_DISABLE_MOST_OPTIMIZATIONS=1` in the
    environment (not a flag of ours), so the test process and every
    subprocess it starts (example scripts, torchrun-free launchers, the
    findings study) compile the same way: results compared across them
    stay comparable. The tiny test models compile far more than they
    compute; this cuts the jax tier's CPU time by about a third with the
    same semantics (numerical checks keep their tolerances). `make
    test-all` runs with XLA's full optimisation, as users do."""
    import keras

    if keras.backend.backend() != "jax":
        return False
    import jax

    return bool(jax.config.read("jax_disable_most_optimizations"))


def pytest_report_header(config):
    import keras

    fast = " (XLA: most optimisations off)" if FAST_XLA else ""
    return f"keras {keras.__version__}, backend {keras.backend.backend()}{fast}"


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    import keras

    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


TINY = dict(
    image_shape=(28, 28, 3),
    patch_size=4,
    hidden_dim=48,
    num_layers=3,
    num_heads=2,
)


@pytest.fixture
def tiny_backbone():
    return keras_aim.AIMBackbone(**TINY)


@pytest.fixture
def images():
    return (
        np.random.default_rng(0).normal(size=(2, 28, 28, 3)).astype("float32")
    )


def to_numpy(x):
    import keras

    return np.asarray(keras.ops.convert_to_numpy(x), dtype="float64")


def load_example(name):
    """Imports `examples/NAME.py` as module `NAME_example` (a fresh copy)."""
    import importlib.util

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    examples = os.path.join(root, "examples")
    if examples not in sys.path:
        sys.path.insert(0, examples)  # for `import example_utils`
    spec = importlib.util.spec_from_file_location(
        f"{name}_example", os.path.join(examples, f"{name}.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def exit_error(main, args, capsys, code=2):
    """Runs an example's `main(args)` in-process: it must exit with `code`
    and exactly one `ERROR: ...` line on stderr, which is returned."""
    capsys.readouterr()  # what came before is not this run's
    with pytest.raises(SystemExit) as exit:
        main(args)
    err = capsys.readouterr().err
    assert exit.value.code == code, err[-2000:]
    errors = [line for line in err.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and errors[0].startswith("ERROR: "), err[-2000:]
    return errors[0]


def stderr_report(stderr, limit=3000):
    """What a failed subprocess's stderr says, for an assertion message:
    the crash report of a process that died in native code (faulthandler's
    "Fatal Python error" and the threads' stacks, without the long list of
    extension modules that follows), else the last `limit` characters."""
    stderr = stderr or ""
    start = stderr.find("Fatal Python error")
    if start < 0:
        return stderr[-limit:]
    end = stderr.find("Extension modules:", start)
    report = stderr[start : end if end > 0 else None]
    before = stderr[max(0, start - 1000) : start]  # e.g. a C++ check failure
    return (before + report)[: limit + 1000]
