"""benchmarks/gemm_rate.py: the products it times are the right ones."""

import importlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import stderr_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
gemm_rate = importlib.import_module("gemm_rate")
BACKEND = keras.backend.backend()


def numpy_product(product, a, b):
    return {
        "forward": lambda: a @ b,
        "grad_input": lambda: a @ b.T,
        "grad_kernel": lambda: a.T @ b,
    }[product]()


@pytest.mark.parametrize("product", gemm_rate.PRODUCTS)
def test_each_product_is_the_training_step_matmul(product):
    """This backend's framework computes exactly what NumPy does, with
    the output shape of the step's product: (M,N), (M,K), (K,N)."""
    m, k, n = 6, 4, 5
    want_shape = {
        "forward": (m, n),
        "grad_input": (m, k),
        "grad_kernel": (k, n),
    }[product]
    rng = np.random.default_rng(1)
    shape_a, shape_b = gemm_rate.operand_shapes(product, m, k, n)
    a = rng.standard_normal(shape_a).astype("float32")
    b = rng.standard_normal(shape_b).astype("float32")
    call = gemm_rate.multiplier(BACKEND, "float32")(product, a, b)
    got = np.asarray(keras.ops.convert_to_numpy(call()))
    want = numpy_product(product, a, b)
    assert got.shape == want.shape == want_shape
    # Float32 sums of 4 or 6 terms of unit-size numbers: a few ulps.
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_the_dense_layers_of_a_block_and_an_unknown_framework():
    assert gemm_rate.layers(8, depth=12, head_depth=4) == [
        ("qkv", 8, 24, 12),
        ("proj", 8, 8, 12),
        ("fc1", 8, 32, 16),
        ("fc2", 32, 8, 16),
    ]
    with pytest.raises(ValueError, match="Unknown backend 'numpy'"):
        gemm_rate.multiplier("numpy", "float32")


def test_summary_sums_flops_over_time_and_counts_each_layer():
    def row(dtype, product, seconds, gflops):
        return {
            "dtype": dtype,
            "layer": "fc1",
            "count": 3,
            "product": product,
            "seconds": seconds,
            "gflops": gflops,
        }

    torch_rows = [row("float32", p, 1.0, 100.0) for p in gemm_rate.PRODUCTS]
    jax_rows = [
        row("float32", "forward", 1.0, 100.0),
        row("float32", "forward", 3.0, 20.0),  # 160 GFLOP in 4 s
        row("float32", "grad_input", 2.0, 50.0),
        row("float32", "grad_kernel", 2.0, 50.0),
    ]
    rows = gemm_rate.summarise({"torch": torch_rows, "jax": jax_rows})
    torch_row, jax_row = rows
    assert torch_row["step_gemm_seconds"] == 9.0
    assert torch_row["ratio_to_torch"] == 1.0
    assert jax_row["forward_gflops"] == pytest.approx(40.0)
    assert jax_row["grad_input_gflops"] == pytest.approx(50.0)
    assert jax_row["step_gemm_seconds"] == 24.0
    assert jax_row["ratio_to_torch"] == pytest.approx(24.0 / 9.0)
    # Without torch in the run there is no ratio.
    alone = gemm_rate.summarise({"jax": jax_rows})
    assert alone[0]["ratio_to_torch"] is None


@pytest.mark.extra_large
def test_gemm_rate_smoke(tmp_path):
    output = str(tmp_path / "gemm.json")
    frameworks = sorted({BACKEND, "torch"})
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "gemm_rate.py"),
            f"--backends={','.join(frameworks)}",
            "--width=8",
            "--tokens=4",
            "--depth=2",
            "--head_depth=1",
            "--repeats=1",
            "--inner=1",
            "--rounds=2",
            f"--output={output}",
        ],
        env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, stderr_report(result.stderr)
    assert f"| {BACKEND} | bfloat16 |" in result.stdout
    with open(output) as f:
        report = json.load(f)
    assert report["settings"]["depth"] == 2
    # 4 layers x 3 products x 2 dtypes per framework.
    assert {b: len(r) for b, r in report["results"].items()} == {
        b: 24 for b in frameworks
    }
    assert len(report["summary"]) == 2 * len(frameworks)
    assert report["environment"]["cpu"]["model"]
