"""The downstream example scripts end to end, with tiny settings.

probe.py, finetune.py, extract_features.py and evaluate.py run on a tiny
backbone preset and the built-in digits, in-process through their `run`
functions. The command-line contract (exit status 2 and one line on bad
input) is checked in-process through each script's `main`; one real
command per script (`large`) runs it end to end in a fresh interpreter.
"""

import inspect
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import exit_error
from conftest import load_example
from conftest import stderr_report

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


def classifier_of(probed):
    return os.path.join(probed[0], "classifier")


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


@pytest.mark.large(backend="torch")
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


@pytest.mark.large(backend="torch")
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


def mean_pooled(preset, images, layers):
    """The averaged `layers` outputs, mean over the tokens, in NumPy."""
    backbone = keras_aim.AIMBackbone.from_preset(preset)
    out = []
    for start in range(0, len(images), 512):
        blocks = backbone.extract_features(images[start : start + 512], layers)
        blocks = [keras.ops.convert_to_numpy(b) for b in blocks]
        out.append(np.mean(blocks, axis=0).mean(axis=1))
    return np.concatenate(out)


def digits_arrays(preset, split):
    from keras_aim import data
    from keras_aim.models.aim.aim_image_converter import load_image_converter

    converter = load_image_converter(preset)
    images = data.labelled_images(
        "digits", split, image_converter=converter, seed=3
    )
    return images.to_arrays()


@pytest.mark.parametrize(
    "labels_per_class",
    [pytest.param(n, marks=pytest.mark.large(backend="torch")) for n in (0, 4)],
)
def test_knn_probe_trains_and_saves_nothing(preset, tmp_path, labels_per_class):
    from keras_aim import probing

    output_dir = str(tmp_path / "knn")
    metrics = probe.run(
        preset,
        "digits",
        probe="knn",
        labels_per_class=labels_per_class,
        seed=3,
        output_dir=output_dir,
        verbose=0,
    )
    saved = read_metrics(output_dir)
    assert saved["probe"] == "knn" and saved["probe_layers"] == [0, 1]
    assert saved["labels_per_class"] == labels_per_class
    assert saved["num_train"] == (labels_per_class * 10 or 1258)
    assert saved["num_test"] == 539 and saved["k"] == 20
    assert not os.path.exists(os.path.join(output_dir, "classifier"))
    assert "classifier" not in metrics["files"]
    assert is_png(os.path.join(output_dir, "confusion.png"))
    # The same k-NN on features computed here, from the backbone's blocks.
    (x, y), (test_x, test_y) = (
        digits_arrays(preset, s) for s in ("train", "test")
    )
    if labels_per_class:
        subset = probing.class_balanced_subset(y, labels_per_class, seed=3)
        x, y = x[subset], y[subset]
    expected = probing.knn_metrics(
        mean_pooled(preset, x, [0, 1]),
        y,
        mean_pooled(preset, test_x, [0, 1]),
        test_y,
        num_classes=10,
    )
    assert saved["top1"] == pytest.approx(expected["top1"], abs=1 / 539)
    assert saved["top5"] == pytest.approx(expected["top5"], abs=1 / 539)


@pytest.mark.large(backend="torch")
def test_attentive_probe_on_few_labels(preset, tmp_path):
    metrics = probe.main(
        [
            f"--preset={preset}",
            "--labels_per_class=3",
            "--epochs=2",
            "--seed=1",
            f"--output_dir={tmp_path}",
        ]
    )
    saved = read_metrics(str(tmp_path))
    assert saved["num_train"] == 30 and saved["labels_per_class"] == 3
    assert saved["num_test"] == 539 and saved["top1"] == metrics["top1"]
    classifier = keras_aim.AIMImageClassifier.from_preset(
        os.path.join(str(tmp_path), "classifier")
    )
    assert classifier.num_classes == 10


@pytest.mark.parametrize("rank", [2, 0])
@pytest.mark.large(backend="torch")
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
        extract_features.run(
            preset,
            "digits",
            layers=["2"],
            output_dir=str(tmp_path / "refused"),
            verbose=0,
        )


SCRIPTS = {
    "probe": probe,
    "finetune": finetune,
    "extract_features": extract_features,
    "evaluate": evaluate,
}
# (script, arguments, what its one ERROR line says); {preset} is a backbone
# preset, {classifier} the probe's classifier, {file} a plain file.
BAD_INPUT = [
    ("probe", ["--probe=foo"], "--probe=foo"),
    ("probe", ["--prob=linear"], "Unknown command line flag 'prob'"),
    ("probe", ["--epochs=0"], "--epochs=0"),
    ("probe", ["--batch_size=-8"], "--batch_size=-8"),
    ("probe", ["--learning_rate=0"], "must be positive"),
    ("probe", ["--seed=-1"], "--seed=-1"),
    ("probe", ["--dataset=digits"], "--preset is required"),
    ("probe", ["--preset={preset}", "stray"], "Unexpected arguments"),
    ("probe", ["--preset={file}"], "is a file"),
    ("probe", ["--preset={file}_missing"], "Unknown preset"),
    ("probe", ["--preset={preset}", "--probe_layers=0,5"], "out of range"),
    ("probe", ["--preset={preset}", "--dataset=nowhere"], "'nowhere'"),
    ("probe", ["--probe=knm"], "--probe=knm"),
    ("probe", ["--labels_per_class=-1"], "--labels_per_class=-1"),
    ("probe", ["--labels_per_class=ten"], "--labels_per_class=ten"),
    (
        "probe",
        ["--preset={preset}", "--probe=knn", "--labels_per_class=200"],
        "class 0 has only",
    ),
    ("finetune", ["--lora_rank=-1"], "--lora_rank=-1"),
    ("finetune", ["--layer_decay=1.5"], "--layer_decay=1.5"),
    ("finetune", ["--layer_decay=0"], "must be positive"),
    ("finetune", ["--probe=mlp"], "--probe=mlp"),
    ("finetune", ["--lora_rnk=2"], "Unknown command line flag 'lora_rnk'"),
    ("finetune", ["--epochs=1"], "--preset is required"),
    ("extract_features", ["--pool=max"], "--pool=max"),
    ("extract_features", ["--split=val"], "--split=val"),
    ("extract_features", ["--layer=0"], "Unknown command line flag 'layer'"),
    ("extract_features", ["--batch_size=0"], "--batch_size=0"),
    ("extract_features", ["--layers=0"], "--preset is required"),
    ("extract_features", ["--preset={preset}", "--layers=2"], "out of range"),
    ("extract_features", ["--preset={preset}", "--layers=first"], "first"),
    ("extract_features", ["--preset={preset}", "--layers=0,0"], "twice"),
    ("evaluate", ["--dataset=digits"], "--preset is required"),
    ("evaluate", ["--split=bogus"], "--split=bogus"),
    ("evaluate", ["--batch_size=0"], "--batch_size=0"),
    ("evaluate", ["--probe_layer=best"], "Unknown command line flag"),
    ("evaluate", ["--preset={preset}"], "without a classification head"),
    (
        "evaluate",
        ["--preset={classifier}", "--dataset=photos"],
        "labels would mean other classes",
    ),
]


@pytest.mark.parametrize("script,args,message", BAD_INPUT)
def test_bad_input_exits_2_with_one_line(
    script, args, message, preset, tmp_path, capsys, request
):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a preset")
    names = {"preset": preset, "file": str(blocker)}
    if any("{classifier}" in a for a in args):
        names["classifier"] = classifier_of(request.getfixturevalue("probed"))
    args = [a.format(**names) for a in args]
    output_dir = f"--output_dir={tmp_path / 'out'}"
    error = exit_error(SCRIPTS[script].main, [*args, output_dir], capsys)
    assert message in error


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_unwritable_output_dir_exits_2(script, preset, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    output_dir = str(blocker / "run")
    error = exit_error(
        SCRIPTS[script].main,
        [f"--preset={preset}", f"--output_dir={output_dir}"],
        capsys,
    )
    assert "not a writable folder" in error and output_dir in error


def test_main_maps_every_flag_to_run_by_name(preset, tmp_path):
    # The flags' defaults are `run`'s, and each flag reaches `run` as the
    # keyword of its name: main and run give the same result.
    for module in SCRIPTS.values():
        parameters = inspect.signature(module.run).parameters
        assert set(parameters) - set(module.SCRIPT.names) == {"verbose"}
        for name in module.SCRIPT.names:
            default = parameters[name].default
            if default is inspect.Parameter.empty:
                default = None
            if isinstance(default, tuple):
                default = list(default)
            assert module.SCRIPT.defaults[name] == default, name
    args = ["--layers=1", "--pool=mean", "--split=train", "--batch_size=500"]
    shapes, path = extract_features.main(
        [f"--preset={preset}", *args, f"--output_dir={tmp_path}"]
    )
    assert path == os.path.join(str(tmp_path), "features.npz")
    assert shapes == {"block_1": (1258, 32), "labels": (1258,)}


COMMANDS = {
    "probe": ["--preset={preset}", "--epochs=1", "--batch_size=256"],
    "finetune": [
        "--preset={preset}",
        "--lora_rank=2",
        "--epochs=1",
        "--batch_size=256",
    ],
    "extract_features": ["--preset={preset}", "--layers=0,final"],
    "evaluate": ["--preset={classifier}"],
}


def _command_tier(script):
    # One real command line per tier is enough to prove the scripts' shared
    # `scaffold.cli` wiring (each `run` is tested in-process above): probe
    # and evaluate run in `make test`, the other two in `make test-all`.
    if script in ("probe", "evaluate"):
        return pytest.mark.large
    return pytest.mark.extra_large


@pytest.mark.parametrize(
    "script",
    [pytest.param(s, marks=_command_tier(s), id=s) for s in sorted(COMMANDS)],
)
def test_command_line_run(script, preset, probed, tmp_path):
    """`python examples/SCRIPT.py ...` in a fresh interpreter: absl's
    app.run on the global flags, the files written, exit status 0."""
    names = {"preset": preset, "classifier": classifier_of(probed)}
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [
            sys.executable,
            os.path.join(EXAMPLES, f"{script}.py"),
            *[a.format(**names) for a in COMMANDS[script]],
            f"--output_dir={tmp_path}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, stderr_report(result.stderr)
    assert "ERROR" not in result.stderr
    assert "Wall time" in result.stdout
    if script == "extract_features":
        with np.load(os.path.join(str(tmp_path), "features.npz")) as arrays:
            assert arrays["block_0"].shape == (539, 16, 32)
            assert arrays["final"].shape == (539, 16, 32)
        return
    saved = read_metrics(str(tmp_path))
    assert saved["num_test"] == 539
    if script == "evaluate":
        # Another process: logits may differ in the last bits, which can
        # flip a prediction that sits on a tie; one image of 539 at most.
        assert saved["top1"] == pytest.approx(probed[1]["top1"], abs=1 / 539)
    if script == "finetune":
        assert os.path.exists(os.path.join(str(tmp_path), "lora.weights.h5"))


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


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "NaN", "+inf"])
@pytest.mark.parametrize(
    "script,name",
    [
        ("probe", "learning_rate"),
        ("probe", "weight_decay"),
        ("finetune", "learning_rate"),
        ("finetune", "layer_decay"),
    ],
)
def test_non_finite_numbers_exit_2_before_any_work(
    script, name, value, tmp_path, capsys
):
    module = load(script)
    output_dir = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        module.main([f"--{name}={value}", f"--output_dir={output_dir}"])
    assert info.value.code == 2
    errors = [
        line
        for line in capsys.readouterr().err.splitlines()
        if line.startswith("ERROR")
    ]
    # The finite check or the flag's own bounds: either names the flag.
    assert len(errors) == 1 and f"--{name}" in errors[0], errors
    assert not output_dir.exists()  # refused before any work
