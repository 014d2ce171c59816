"""The prepared accelerator run (`benchmarks/device/run.sh`) in its dry-run
form: the same code path on the CPU at tiny sizes, so that the first lent
GPU gives every number in one go instead of a traceback."""

import json
import os
import subprocess
import sys

import keras
import pytest
from conftest import stderr_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks", "device"))
import parts  # noqa: E402
import run  # noqa: E402


def test_the_flop_count_is_the_stated_formula():
    g = run.GEOMETRY["full"]
    tokens = parts.num_tokens(g)
    assert tokens == 256
    # 6 * P * T * B for the matmuls, 12 * L * T^2 * D * B for attention.
    params, batch = 1_000_000, 8
    matmuls = 6 * params * tokens * batch
    attention = 12 * g["num_layers"] * tokens**2 * g["hidden_dim"] * batch
    assert attention / matmuls == pytest.approx(
        2 * g["num_layers"] * tokens * g["hidden_dim"] / params
    )


def test_missing_packages_are_named_before_any_work(monkeypatch):
    monkeypatch.setattr(run, "installed", lambda name: name != "keras")
    with pytest.raises(SystemExit, match="missing \\['keras'\\]"):
        run.check_installed(["jax"])
    monkeypatch.setattr(run, "installed", lambda name: name in run.REQUIRED)
    with pytest.raises(SystemExit, match="none of the backends"):
        run.check_installed(["jax", "torch"])


def test_an_out_of_memory_batch_falls_back_to_a_smaller_one():
    tried = []

    def attempt(batch):
        tried.append(batch)
        if batch > 4:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return {"ok": batch}

    batch, got, errors = parts.largest_batch([2, 16, 8, 4], attempt)
    assert (batch, got, tried) == (4, {"ok": 4}, [16, 8, 4])
    assert errors == {16: "out of memory", 8: "out of memory"}
    with pytest.raises(ValueError, match="not memory"):
        parts.largest_batch(
            [2], lambda b: (_ for _ in ()).throw(ValueError("not memory"))
        )


@pytest.mark.extra_large
@pytest.mark.skipif(
    keras.backend.backend() != "jax",
    reason="the run starts its own jax and torch processes; once is enough",
)
def test_dry_run_writes_every_number(tmp_path):
    stem = str(tmp_path / "device")
    env = dict(os.environ, PYTHON=sys.executable, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [
            os.path.join(ROOT, "benchmarks", "device", "run.sh"),
            "--dry-run",
            "--output",
            stem,
            "--budget",
            "420",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, stderr_report(result.stderr)
    with open(stem + ".dry.json") as f:
        results = json.load(f)
    assert results["dry_run"] is True
    assert sorted(results["backends"]) == ["jax", "torch"]
    for name, got in results["backends"].items():
        for part in ("kernel", "parity", "inference", "train"):
            assert "error" not in got[part], (name, part, got[part])
        assert got["kernel"]["prefix_mask"]["ran"]
        assert got["kernel"]["no_mask"]["ran"]
        assert got["parity"]["cosine"] > 0.99
        for dtype in ("float32", "bfloat16"):
            assert got["inference"][dtype]["images_per_second"] > 0
        train = got["train"]
        assert train["finite"] and train["batch"] in (2, 4)
        assert 0 < train["mfu"] < 1
        tokens = parts.num_tokens(results["geometry"])
        g = results["geometry"]
        want = 6 * train["parameters"] * tokens * train["batch"]
        want += (
            12
            * g["num_layers"]
            * tokens**2
            * g["hidden_dim"]
            * (train["batch"])
        )
        assert train["flops_per_step"] == want
    with open(stem + ".dry.md") as f:
        table = f.read()
    assert "| jax | train |" in table and "FAILED" not in table
