"""Export: routes and their errors, the export-safe pieces of the model,
and export -> reload in the format's own runtime -> same outputs.

The round trips are `large` (each export takes 10-60 s on two cores) and
pinned to the backend of their cell, so `--run_large=once` runs each cell
once, on its own backend.
"""

import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import load_example
from conftest import stderr_report
from conftest import to_numpy

import keras_aim
from keras_aim import export
from keras_aim.layers.activations import exact_gelu
from keras_aim.utils.validation import check_image_shape

BACKEND = keras.backend.backend()
ARCH = dict(patch_size=4, hidden_dim=32, num_layers=2, num_heads=2)
# Cells that work (export, reload, match), as measured; the rest of
# FORMATS x backends is `export.UNSUPPORTED` (or jax/onnx: jax2onnx).
SUPPORTED = [
    ("tensorflow", "tf_saved_model"),
    ("tensorflow", "onnx"),
    ("tensorflow", "openvino"),
    ("tensorflow", "litert"),
    ("jax", "tf_saved_model"),
    ("torch", "torch"),
    ("torch", "onnx"),
    ("torch", "openvino"),
]
RUNTIME_MODULES = {
    "tf_saved_model": "tensorflow",
    "onnx": "onnxruntime",
    "openvino": "openvino",
    "litert": "ai_edge_litert",
    "torch": "torch",
}
TOLERANCE = 1e-4


def make_classifier(image_shape=(16, 16, 3)):
    keras.utils.set_random_seed(0)
    backbone = keras_aim.AIMBackbone(image_shape=image_shape, **ARCH)
    return keras_aim.AIMImageClassifier(
        backbone, num_classes=5, probe_layers=[0, 1]
    )


def batch(size, height=16, width=16, seed=0):
    rng = np.random.default_rng(seed + size)
    return rng.normal(size=(size, height, width, 3)).astype("float32")


def test_every_cell_is_supported_or_names_a_route():
    cells = {
        (b, f) for b in ("tensorflow", "jax", "torch") for f in export.FORMATS
    }
    known = set(SUPPORTED) | set(export.UNSUPPORTED) | {("jax", "onnx")}
    assert cells == known
    for reason in export.UNSUPPORTED.values():
        assert "KERAS_BACKEND=" in reason


@pytest.mark.parametrize("format", export.FORMATS)
def test_unsupported_cells_raise_with_the_route(format):
    if (BACKEND, format) not in export.UNSUPPORTED:
        pytest.skip("supported here")
    with pytest.raises(ValueError, match="KERAS_BACKEND="):
        make_classifier().export("unused", format=format)


def test_a_bad_format_and_a_bad_size_are_refused():
    classifier = make_classifier()
    with pytest.raises(ValueError, match="`format` must be one of"):
        classifier.export("unused", format="coreml")
    with pytest.raises(ValueError, match="built for 16x16"):
        export.input_size(classifier, 32)
    free = make_classifier(image_shape=(None, None, 3))
    with pytest.raises(ValueError, match="multiples of the patch size"):
        export.input_size(free, 18)
    assert export.input_size(free, (8, 12)) == (8, 12, 3)
    assert export.resolve_format("saved_model") == "tf_saved_model"


def test_exact_gelu_matches_the_erf_formula():
    x = np.linspace(-8, 8, 2001).astype("float32")
    want = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    got = to_numpy(exact_gelu(keras.ops.convert_to_tensor(x)))
    np.testing.assert_allclose(got, want, atol=1e-6, rtol=0)
    keras_gelu = to_numpy(keras.ops.gelu(x, approximate=False))
    np.testing.assert_allclose(got, keras_gelu, atol=1e-6, rtol=0)


def test_shape_checks_skip_symbolic_sizes():
    class Symbolic:  # stands for a jax / torch symbolic dimension
        def __mod__(self, other):
            raise TypeError("inconclusive")

    check_image_shape((Symbolic(), Symbolic(), Symbolic(), 3), 4, 3)
    with pytest.raises(ValueError, match="not divisible"):
        check_image_shape((1, 18, 16, 3), 4, 3)


def _require(backend, format):
    if BACKEND != backend:
        pytest.skip(f"a {backend} cell")
    pytest.importorskip(RUNTIME_MODULES[format])


# `make test` exports one format on torch and tensorflow (their own: `.pt2`
# and SavedModel); `make test-all` every cell, jax's SavedModel included.
# An export with its runtime's reload costs 10-40 s here.
FIRST_FORMAT = {
    "tensorflow": "tf_saved_model",
    "jax": "tf_saved_model",
    "torch": "torch",
}


def _tier(backend, format):
    # jax's own cell (jax2tf, 40 s) waits for `make test-all`: it was the
    # longest test in `make test`'s longest session (jax, on 2 cores).
    if FIRST_FORMAT[backend] == format and backend != "jax":
        return pytest.mark.large(backend=backend)
    return pytest.mark.extra_large


def _cells():
    return [
        pytest.param(b, f, marks=_tier(b, f), id=f"{b}-{f}")
        for b, f in SUPPORTED
    ]


@pytest.mark.parametrize("backend,format", _cells())
def test_export_reload_matches_at_two_batches_and_sizes(
    backend, format, tmp_path
):
    _require(backend, format)
    free = (backend, format) in export.ANY_RESOLUTION
    classifier = make_classifier((None, None, 3) if free else (16, 16, 3))
    path = str(tmp_path / export.ARTIFACT_NAMES[format])
    classifier.export(path, format=format)  # never called: export calls it
    run = export.load_artifact(path, format)
    sizes = [(16, 16), (24, 20)] if free else [(16, 16)]
    worst = 0.0
    for height, width in sizes:  # two resolutions from one artifact
        for x in (batch(1, height, width), batch(3, height, width)):
            want = to_numpy(classifier(x))
            np.testing.assert_allclose(run(x), want, atol=TOLERANCE, rtol=0)
            worst = max(worst, float(np.max(np.abs(run(x) - want))))
    # The support matrix in docs/deployment.md is these lines (pytest -s).
    print(f"\nexport cell {backend} {format} any_size={free} {worst:.1e}")


@pytest.mark.extra_large  # the same export route as the test above
@pytest.mark.parametrize("backend,format", _cells())
def test_pooled_backbone_features_export(backend, format, tmp_path):
    _require(backend, format)
    backbone = make_classifier((None, None, 3)).backbone
    model = export.feature_model(backbone, "mean")
    path = str(tmp_path / export.ARTIFACT_NAMES[format])
    export.export_model(model, path, format)
    run = export.load_artifact(path, format)
    for x in (batch(3), batch(2, 24, 20)):
        want = to_numpy(keras.ops.mean(backbone(x), axis=1))
        np.testing.assert_allclose(run(x), want, atol=TOLERANCE, rtol=0)


def _quantized_cells():
    cells = []
    for backend, format in SUPPORTED:
        for mode in ("int8", "int4"):
            if (backend, format, mode) in export.QUANTIZED_UNSUPPORTED:
                continue
            # `make test`: int8 in the own format of torch and tensorflow
            # (jax's goes through the same SavedModel route as tensorflow's).
            mark = _tier(backend, format)
            if mode != "int8" or backend == "jax":
                mark = pytest.mark.extra_large
            cells.append(
                pytest.param(
                    backend,
                    format,
                    mode,
                    marks=mark,
                    id=f"{backend}-{format}-{mode}",
                )
            )
    return cells


@pytest.mark.parametrize("backend,format,mode", _quantized_cells())
def test_quantized_export_matches_the_quantized_model(
    backend, format, mode, tmp_path
):
    _require(backend, format)
    classifier = make_classifier((None, None, 3))
    classifier.quantize(mode)
    path = str(tmp_path / export.ARTIFACT_NAMES[format])
    classifier.export(path, format=format)
    run = export.load_artifact(path, format)
    for height, width in ((16, 16), (24, 20)):
        for x in (batch(1, height, width), batch(3, height, width)):
            want = to_numpy(classifier(x))
            np.testing.assert_allclose(run(x), want, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize(
    "backend,format,mode",
    [
        pytest.param(*cell, marks=pytest.mark.extra_large)
        for cell in sorted(export.QUANTIZED_UNSUPPORTED)
    ],
    ids=["-".join(cell) for cell in sorted(export.QUANTIZED_UNSUPPORTED)],
)
def test_quantized_routes_that_fail_raise_before_exporting(
    backend, format, mode
):
    if BACKEND != backend:
        pytest.skip(f"a {backend} cell")
    classifier = make_classifier()
    classifier.quantize(mode)
    assert export.quantization_modes(classifier) == {mode}
    with pytest.raises(ValueError, match=f"{mode}-quantized.*{format}"):
        classifier.export("unused", format=format)


def test_a_torch_export_failure_at_any_size_names_the_routes(monkeypatch):
    if BACKEND != "torch":
        pytest.skip("the torch route")
    import torch

    def fail(*args, **kwargs):
        raise RuntimeError("Constraints violated (rows)")

    monkeypatch.setattr(torch.export, "export", fail)
    free = make_classifier((None, None, 3))
    with pytest.raises(ValueError, match="image_size=.*KERAS_BACKEND="):
        free.export("unused.pt2", format="torch")
    with pytest.raises(RuntimeError, match="Constraints"):  # one size: as is
        make_classifier().export("unused.pt2", format="torch")


def test_torch_export_declares_sizes_as_multiples_of_the_patch():
    pytest.importorskip("torch")
    import torch

    free = make_classifier((None, None, 3))
    shape, dims = export.torch_dynamic_shapes(free, (None, None, 3))
    assert shape == (2, 12, 20, 3)  # batch 2, grids 3 and 5: none is 1
    assert set(dims) == {0, 1, 2}
    assert (dims[1].fn(5), dims[2].fn(7)) == (20, 28)  # 4 * patches
    assert dims[1].root.min == export.export_lib.MIN_PATCHES == 2
    assert (dims[0].min, dims[0].max) == (1, export.export_lib.MAX_BATCH)
    assert isinstance(dims[0], torch.export.Dim)
    fixed = make_classifier()
    shape, dims = export.torch_dynamic_shapes(fixed, (16, 16, 3))
    assert shape == (2, 16, 16, 3) and set(dims) == {0}


def test_example_refuses_bad_settings():
    example = load_example("export")
    for kwargs, match in (
        (dict(preset=None), "--preset"),
        (dict(preset="p", format="coreml"), "--format"),
        (dict(preset="p", quantize="int2"), "--quantize"),
        (dict(preset="p", image_size=-1), "--image_size"),
        (dict(preset="p", pool="max"), "--pool"),
    ):
        settings = dict(
            preset=None,
            format="onnx",
            quantize="none",
            image_size=None,
            pool="none",
        )
        settings.update(kwargs)
        with pytest.raises(ValueError, match=match):
            example.check_settings(**settings)


@pytest.mark.large(backend="tensorflow")
def test_example_writes_artifact_manifest_and_parity(tmp_path):
    format = {"tensorflow": "onnx", "jax": "saved_model", "torch": "torch"}
    format = format[BACKEND]
    make_classifier().save_to_preset(str(tmp_path / "preset"))
    example = load_example("export")
    manifest, parity = example.run(
        str(tmp_path / "preset"),
        format=format,
        quantize="int8",
        output_dir=str(tmp_path / "out"),
    )
    names = set(os.listdir(tmp_path / "out"))
    assert {"manifest.json", "parity.json", manifest["artifact"]} <= names
    assert parity["passed"] and len(parity["checks"]) == 2
    assert manifest["input_signature"][0]["shape"] == [None, 16, 16, 3]
    assert manifest["class_names"] == [str(i) for i in range(5)]
    assert manifest["normalisation"]["mean"]


@pytest.mark.large
@pytest.mark.parametrize(
    "args,message",
    [(["--format=coreml", "--preset=p"], "--format"), ([], "--preset")],
)
def test_example_bad_input_exits_2_with_one_line(args, message, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(root, "examples", "export.py"),
            *args,
            f"--output_dir={tmp_path}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, stderr_report(result.stderr)
    errors = [x for x in result.stderr.splitlines() if x.startswith("ERROR")]
    assert len(errors) == 1 and message in errors[0]
