"""Shared pytest setup: one backend per run (KERAS_BACKEND), tiny configs."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def pytest_addoption(parser):
    parser.addoption(
        "--run-slow",
        action="store_true",
        default=False,
        help="also run tests marked slow",
    )


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip_slow = pytest.mark.skip(reason="slow; run with --run-slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


def pytest_report_header(config):
    import keras

    return f"keras {keras.__version__}, backend {keras.backend.backend()}"


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
    import keras_aim

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
