"""The downstream example scripts end to end, with tiny settings.

probe.py, finetune.py, extract_features.py and evaluate.py run on a tiny
backbone preset and the built-in digits, in-process through their `run`
functions; the command-line contract (exit status 2 and one line on bad
input) is checked on real subprocesses.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import load_example

import keras_aim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, "examples")
sys.path.insert(0, EXAMPLES)


def load(name):
    return load_example(name)


probe, finetune, extract_features, evaluate = (
    load(n) for n in ("probe", "finetune", "extract_features", "evaluate")
)


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    keras.utils.set_random_seed(0)
    backbone = keras_aim.AIMBackbone(
        image_shape=(16, 16, 3),
        patch_size=4,
        hidden_dim=32,
        num_layers=2,
        num_heads=2,
    )
    folder = str(tmp_path_factory.mktemp("preset") / "backbone")
    backbone.save_to_preset(folder)
    return folder


@pytest.fixture(scope="module")
def probed(preset, tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("probe"))
    metrics = probe.run(
        preset,
        "digits",
        epochs=2,
        batch_size=128,
        output_dir=output_dir,
        verbose=0,
    )
    return output_dir, metrics


def read_metrics(output_dir):
    with open(os.path.join(output_dir, "metrics.json")) as f:
        return json.load(f)


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_probe_writes_metrics_confusion_and_classifier(probed):
    output_dir, metrics = probed
    saved = read_metrics(output_dir)
    assert {"top1", "top5", "num_train", "num_test"} <= set(saved)
    assert (saved["num_train"], saved["num_test"]) == (1258, 539)
    assert 0.1 < saved["top1"] <= saved["top5"] <= 1.0
    assert saved["probe_layers"] == [0, 1]
    assert is_png(os.path.join(output_dir, "confusion.png"))
    classifier = keras_aim.AIMImageClassifier.from_preset(
        os.path.join(output_dir, "classifier")
    )
    assert classifier.num_classes == 10


def test_evaluate_reproduces_the_probe_accuracy(probed, tmp_path):
    output_dir, metrics = probed
    out = str(tmp_path / "eval")
    result = evaluate.run(
        os.path.join(output_dir, "classifier"),
        "digits",
        output_dir=out,
        verbose=0,
    )
    saved = read_metrics(out)
    assert {"top1", "top5", "num_test"} <= set(saved)
    assert saved["top1"] == metrics["top1"] and saved["num_test"] == 539
    assert result["split"] == "test" and is_png(result["files"]["confusion"])


def test_linear_probe(preset, tmp_path):
    metrics = probe.run(
        preset,
        "digits",
        probe="linear",
        probe_layers="1",
        epochs=1,
        batch_size=256,
        output_dir=str(tmp_path),
        verbose=0,
    )
    assert metrics["probe"] == "linear" and metrics["probe_layers"] == [1]
    classifier = keras_aim.AIMImageClassifier.from_preset(
        os.path.join(str(tmp_path), "classifier")
    )
    assert classifier.probe == "linear"


@pytest.mark.parametrize("rank", [2, 0])
def test_finetune_with_and_without_lora(preset, tmp_path, rank):
    metrics = finetune.run(
        preset,
        "digits",
        lora_rank=rank,
        layer_decay=0.75,
        epochs=1,
        batch_size=128,
        output_dir=str(tmp_path),
        verbose=0,
    )
    saved = read_metrics(str(tmp_path))
    assert {"top1", "top5", "num_train", "num_test"} <= set(saved)
    lora_file = os.path.join(str(tmp_path), "lora.weights.h5")
    assert os.path.exists(lora_file) == bool(rank)
    if rank:
        # LoRA matrices of 4 kernels in 2 blocks plus the head.
        lora_params = 2 * rank * (4 * 32 + 2 * 32 + 5 * 32 + 5 * 32)
        head = metrics["trainable_parameters"] - lora_params
        assert 0 < head < 5000
        backbone = keras_aim.AIMBackbone.from_preset(preset)
        backbone.load_lora_weights(lora_file)
    classifier = keras_aim.AIMImageClassifier.from_preset(
        os.path.join(str(tmp_path), "classifier")
    )
    result = evaluate.run(
        os.path.join(str(tmp_path), "classifier"),
        "digits",
        output_dir=str(tmp_path / "eval"),
        verbose=0,
    )
    assert result["top1"] == pytest.approx(metrics["top1"])
    assert classifier.num_classes == 10


def test_extract_features(preset, tmp_path):
    shapes, path = extract_features.run(
        preset,
        "digits",
        layers=["0", "final"],
        pool="mean",
        output_dir=str(tmp_path),
        verbose=0,
    )
    with np.load(path) as arrays:
        assert sorted(arrays.files) == ["block_0", "final", "labels"]
        assert arrays["block_0"].shape == (539, 32)
        assert arrays["final"].shape == (539, 32)
        assert arrays["labels"].shape == (539,)
    shapes, _ = extract_features.run(
        preset, "digits", layers=["1"], output_dir=str(tmp_path), verbose=0
    )
    assert shapes["block_1"] == (539, 16, 32)
    with pytest.raises(ValueError, match="out of range"):
        extract_features.run(preset, "digits", layers=["2"], verbose=0)


@pytest.mark.parametrize(
    "script,args,message",
    [
        ("probe", ["--probe=foo"], "--probe=foo"),
        ("evaluate", ["--dataset=digits"], "--preset is required"),
        ("extract_features", ["--pool=max"], "--pool=max"),
    ],
)
def test_bad_input_exits_2_with_one_line(script, args, message, tmp_path):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(EXAMPLES, f"{script}.py"),
            *args,
            f"--output_dir={tmp_path}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("ERROR")]
    assert len(errors) == 1 and message in errors[0]


def test_bad_presets_and_layers_are_clear_errors(preset, tmp_path):
    with pytest.raises(ValueError, match="out of range"):
        probe.run(
            preset,
            "digits",
            probe_layers="0,5",
            verbose=0,
            output_dir=str(tmp_path),
        )
    with pytest.raises(ValueError, match="no config.json"):
        probe.run(
            str(tmp_path), "digits", verbose=0, output_dir=str(tmp_path / "x")
        )
    with pytest.raises(ValueError, match="without a classification head"):
        evaluate.run(preset, "digits", verbose=0, output_dir=str(tmp_path))
    with pytest.raises(ValueError, match="lora_rank"):
        finetune.run(preset, lora_rank=-1, verbose=0, output_dir=str(tmp_path))
