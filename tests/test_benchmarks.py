"""Smoke tests of the benchmark scripts at tiny sizes (no timing asserts)."""

import json
import os
import subprocess
import sys

import keras

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(name, *args):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", name), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_training_overhead_smoke(tmp_path):
    output = str(tmp_path / "overhead.json")
    backend = keras.backend.backend()
    stdout = run_script(
        "training_overhead.py",
        f"--backends={backend}",
        "--steps=4",
        "--repeats=1",
        "--batch_size=8",
        "--width=32",
        "--depth=1",
        "--log_every=2",
        f"--output={output}",
    )
    assert f"| {backend} |" in stdout
    with open(output) as f:
        result = json.load(f)["results"][backend]
    assert result["bare_seconds"] > 0 and result["loop_seconds"] > 0
    assert result["ratio"] == result["loop_seconds"] / result["bare_seconds"]
    runs = result["runs"]
    assert len(runs["bare"]) == len(runs["loop"]) == 1
    assert set(result["conversions_per_step"]) == {"bare", "loop"}
