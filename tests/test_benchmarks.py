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


def test_plan_counts_match_built_models(tmp_path):
    """plan.py's parameter formula against models built here, and its table."""
    output = str(tmp_path / "plan.json")
    stdout = run_script(
        "plan.py",
        "--presets=aim_600m",
        "--devices=8",
        "--measure",
        f"--output={output}",
    )
    assert "| aim_600m | 8 | 2x4 |" in stdout  # 4 divides 12 heads
    with open(output) as f:
        result = json.load(f)
    measured = result["measured"]
    assert measured["planned_parameters"] == measured["built_parameters"]
    assert measured["step_seconds"] > 0
    plain, remat = result["rows"]
    assert (plain["remat"], remat["remat"]) == (False, True)
    # The paper's figure: about 1.7 TFLOP per image for an AIM-600M step.
    assert abs(plain["train_tflop_per_image"] - 1.70) < 0.02
    assert remat["activation_gb_per_device"] < plain["activation_gb_per_device"]
    # 16 bytes per parameter (weights, gradients, two AdamW moments), /8.
    assert plain["state_gb_per_device"] == 16 * plain["parameters"] / 8 / 1e9


def test_conversion_memory_smoke(tmp_path):
    """The loading-memory benchmark on a tiny checkpoint, Keras preset too."""
    backend = keras.backend.backend()
    results = tmp_path / "results"
    stdout = run_script(
        "conversion_memory.py",
        f"--backend={backend}",
        "--width=64",
        "--blocks=1",
        "--num-heads=4",
        "--cases=import,keras_f32",
        f"--workdir={tmp_path / 'work'}",
        f"--results-dir={results}",
    )
    for case in ("import", "keras_f32"):
        assert f"| {case} |" in stdout
    report = (results / f"conversion_memory_{backend}.md").read_text()
    assert "width 64, 1 blocks" in report and "| keras_f32 |" in report
    assert not (tmp_path / "work").exists()  # scratch removed without --keep
