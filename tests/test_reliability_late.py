"""Round two, class 6: raw tracebacks and late failures of the scripts.

Each case is a command a careless or hostile user could type; each must
exit 2 with one `ERROR:` line, before any work (data read, model trained:
the `no_work` guard fails the test otherwise) wherever the answer does not
need the model. The issue's own cases come first, generated over every
script that has the flag; then the attacks of a second hostile pass
(`ATTACKS`), each fixed at its root: the flag table (`flag_table.py`),
the output-folder check (`scaffold.writes`), the run lock, the flag-file
check, the library's validation.
"""

import os
import unicodedata

import keras
import numpy as np
import pytest
from conftest import exit_error
from conftest import load_example

import keras_aim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A backbone preset, a classifier preset (named classes), one with
    NaN head weights, one whose config names the wrong number of classes,
    a FIFO and an image folder."""
    from PIL import Image

    root = tmp_path_factory.mktemp("late")
    keras.utils.set_random_seed(0)
    backbone = keras_aim.AIMBackbone(
        image_shape=(16, 16, 3),
        patch_size=4,
        hidden_dim=32,
        num_layers=2,
        num_heads=2,
    )
    backbone.save_to_preset(str(root / "backbone"))
    names = ["café", "tea"]
    classifier = keras_aim.AIMImageClassifier(
        backbone, num_classes=2, probe_layers=[0, 1], class_names=names
    )
    classifier.save_to_preset(str(root / "classifier"))
    kernel = classifier.probe_head.weights[-1]
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    classifier.save_to_preset(str(root / "nan_classifier"))
    import json

    classifier.save_to_preset(str(root / "bad_names"))
    config_path = root / "bad_names" / "config.json"
    config = json.loads(config_path.read_text())
    config["config"]["class_names"] = ["a", "b", "c"]
    config_path.write_text(json.dumps(config))
    os.mkfifo(root / "fifo")
    for name in names:
        folder = root / "images" / name
        folder.mkdir(parents=True)
        Image.new("RGB", (16, 16), (200, 10, 10)).save(folder / "x.png")
    # The same names, decomposed (macOS file names): not the same classes.
    for name in names:
        folder = root / "nfd" / unicodedata.normalize("NFD", name)
        folder.mkdir(parents=True)
        Image.new("RGB", (16, 16), (200, 10, 10)).save(folder / "x.png")
    (root / "flags.cfg").write_text(f"--flagfile={root / 'fifo'}\n")
    return {
        "T": str(root),
        "preset": str(root / "backbone"),
        "classifier": str(root / "classifier"),
        "nan": str(root / "nan_classifier"),
        "bad_names": str(root / "bad_names"),
        "fifo": str(root / "fifo"),
        "images": str(root / "images"),
        "nfd": str(root / "nfd"),
        "flags": str(root / "flags.cfg"),
    }


@pytest.fixture
def no_work(monkeypatch):
    def work(*args, **kwargs):
        raise AssertionError("work started before the refusal")

    from keras_aim import data
    from keras_aim import probing
    from keras_aim import training

    for module, name in (
        (data, "labelled_images"),
        (data, "pretraining_dataset"),
        (training, "train"),
        (probing, "train_probe"),
        (probing, "train_classifier"),
    ):
        monkeypatch.setattr(module, name, work)


def refused(script, args, files, tmp_path, capsys, output_dir=True):
    args = [a.format(**files) for a in args]
    if output_dir:
        args.append(f"--output_dir={tmp_path / 'out'}")
    return exit_error(load_example(script).main, args, capsys)


# --- The issue's cases ------------------------------------------------------

ISSUE = [
    ("pretrain", ["--mesh=abcx1"], "--mesh=abcx1: must be BATCHxMODEL"),
    ("pretrain", ["--mesh=abcx1", "--distribution=data"], "BATCHxMODEL"),
    ("pretrain", ["--num_preview=-1"], "--num_preview=-1"),
    ("extract_features", ["--batch_size=0"], "--batch_size=0"),
    ("evaluate", ["--batch_size=0"], "--batch_size=0"),
    ("finetune", ["--lora_rank=1e8"], "--lora_rank=1e8"),
    ("finetune", ["--lora_rank=100000000"], "--lora_rank=100000000"),
    ("pretrain", ["--learning_rate=-1"], "--learning_rate=-1"),
]


@pytest.mark.parametrize("script,args,message", ISSUE)
def test_the_issue_cases(
    script, args, message, files, tmp_path, capsys, no_work
):
    error = refused(script, args, files, tmp_path, capsys)
    assert message in error
    assert not (tmp_path / "out").exists()  # refused at the flags


@pytest.mark.parametrize(
    "name,thing",
    [
        ("checkpoints", "file"),
        ("tensorboard", "file"),
        ("log.csv", "directory"),
        ("backbone", "file"),
    ],
)
def test_pretrain_output_layout_is_checked_first(
    name, thing, files, tmp_path, capsys, no_work
):
    out = tmp_path / "out"
    out.mkdir()
    if thing == "file":
        (out / name).write_text("x")
    else:
        (out / name).mkdir()
    error = refused("pretrain", [], files, tmp_path, capsys)
    kind = "a folder" if thing == "file" else "a file"
    assert f"{out / name}" in error and f"the run writes {kind}" in error


def test_the_library_training_loop_checks_its_layout(tmp_path):
    from keras_aim import training

    (tmp_path / "checkpoints").write_text("x")
    with pytest.raises(training.SettingsError, match="writes a folder"):
        training.train(None, None, 1, str(tmp_path))


def test_finetune_checks_the_lora_rank_before_any_data(
    files, tmp_path, capsys, no_work
):
    error = refused(
        "finetune",
        ["--preset={preset}", "--lora_rank=33"],
        files,
        tmp_path,
        capsys,
    )
    assert "`rank`=33 is above the full rank" in error


# --- A second hostile pass: new attacks, each fixed at its root ------------

# (id, script, args, what the one ERROR line says, stage): "flags" refused
# when the flags are parsed (nothing created), "model" before any data is
# read, "data" by the data check itself (reading it is the check).
ATTACKS = [
    ("seed-overflow", "probe", ["--seed=4294967296"], "--seed", "flags"),
    (
        "steps-int64",
        "pretrain",
        ["--steps=99999999999999999999"],
        "--steps",
        "flags",
    ),
    (
        "batch-huge",
        "pretrain",
        ["--batch_size=9999999999"],
        "--batch_size",
        "flags",
    ),
    (
        "image-huge",
        "pretrain",
        ["--image_size=100000"],
        "--image_size",
        "flags",
    ),
    ("heads-zero", "pretrain", ["--num_heads=0"], "--num_heads", "flags"),
    (
        "lr-underflow",
        "probe",
        ["--learning_rate=1e-400"],
        "must be positive",
        "flags",
    ),
    (
        "lr-huge",
        "finetune",
        ["--learning_rate=1e30"],
        "--learning_rate",
        "flags",
    ),
    ("decay-neg", "probe", ["--weight_decay=-0.1"], "--weight_decay", "flags"),
    ("log-every-0", "pretrain", ["--log_every=0"], "--log_every", "flags"),
    (
        "keep-0",
        "pretrain",
        ["--keep_checkpoints=0"],
        "--keep_checkpoints",
        "flags",
    ),
    (
        "ckpt-neg",
        "pretrain",
        ["--checkpoint_every=-5"],
        "--checkpoint_every",
        "flags",
    ),
    ("verbose-7", "pretrain", ["--verbose=7"], "--verbose", "flags"),
    ("mesh-0", "pretrain", ["--mesh=0x1"], "BATCHxMODEL", "flags"),
    ("mesh-3d", "pretrain", ["--mesh=2x2x2"], "BATCHxMODEL", "flags"),
    (
        "fractions-nan",
        "reproduce_findings",
        ["--checkpoint_fractions=nan,1.0"],
        "finite",
        "flags",
    ),
    (
        "fractions-2",
        "reproduce_findings",
        ["--checkpoint_fractions=0.5,2"],
        "--checkpoint_fractions",
        "flags",
    ),
    (
        "widths-text",
        "reproduce_findings",
        ["--widths=8,abc"],
        "integers",
        "flags",
    ),
    ("widths-neg", "reproduce_findings", ["--widths=-8"], "--widths", "flags"),
    ("seeds-0", "reproduce_findings", ["--seeds=0"], "--seeds", "flags"),
    (
        "export-size-neg",
        "export",
        ["--preset=x", "--image_size=-3"],
        "--image_size",
        "flags",
    ),
    (
        "export-format",
        "export",
        ["--preset=x", "--format=coreml"],
        "--format",
        "flags",
    ),
    (
        "probe-layers-neg",
        "probe",
        ["--preset={preset}", "--probe_layers=-1"],
        "--probe_layers=-1",
        "flags",
    ),
    (
        "probe-layers-gap",
        "finetune",
        ["--preset={preset}", "--probe_layers=0,,1"],
        "--probe_layers",
        "flags",
    ),
    (
        "flagfile-zero",
        "probe",
        ["--flagfile=/dev/zero"],
        "regular file",
        "flags",
    ),
    ("flagfile-fifo", "probe", ["--flagfile={fifo}"], "regular file", "flags"),
    (
        "flagfile-nested",
        "evaluate",
        ["--flagfile={flags}"],
        "regular file",
        "flags",
    ),
    (
        "output-empty",
        "probe",
        ["--preset={preset}", "--output_dir="],
        "output_dir",
        "model",
    ),
    (
        "output-devnull",
        "probe",
        ["--preset={preset}", "--output_dir=/dev/null"],
        "not a writable folder",
        "model",
    ),
    (
        "output-fifo",
        "evaluate",
        ["--preset={classifier}", "--output_dir={fifo}"],
        "not a writable folder",
        "model",
    ),
    ("preset-fifo", "probe", ["--preset={fifo}"], "fifo", "model"),
    (
        "probe-layers-range",
        "probe",
        ["--preset={preset}", "--probe_layers=0,5"],
        "out of range",
        "model",
    ),
    (
        "finetune-layers-range",
        "finetune",
        ["--preset={preset}", "--probe_layers=7"],
        "out of range",
        "model",
    ),
    (
        "layers-float",
        "extract_features",
        ["--preset={preset}", "--layers=1e3"],
        "1e3",
        "model",
    ),
    (
        "layers-empty",
        "extract_features",
        ["--preset={preset}", "--layers="],
        "--layers",
        "model",
    ),
    (
        "head-mismatch",
        "evaluate",
        ["--preset={classifier}", "--probe_layers=0"],
        "were trained with",
        "model",
    ),
    (
        "names-count",
        "evaluate",
        ["--preset={bad_names}"],
        "one name per class",
        "model",
    ),
    (
        "tokens-huge",
        "pretrain",
        ["--image_size=8192", "--patch_size=4"],
        "far beyond any AIM",
        "model",
    ),
    (
        "patch-divides",
        "pretrain",
        ["--image_size=15", "--patch_size=4"],
        "15",
        "model",
    ),
    (
        "heads-divide",
        "pretrain",
        ["--hidden_dim=36", "--num_heads=8"],
        "num_heads",
        "model",
    ),
    (
        "probe-best-tiny",
        "probe",
        ["--preset={preset}", "--probe_layers=best"],
        "released AIM sizes",
        "model",
    ),
    (
        "probe-layers-twice",
        "probe",
        ["--preset={preset}", "--probe_layers=0,1,0"],
        "distinct",
        "model",
    ),
    (
        "dataset-empty",
        "probe",
        ["--preset={preset}", "--dataset="],
        "source",
        "data",
    ),
    (
        "dataset-tfds-empty",
        "probe",
        ["--preset={preset}", "--dataset=tfds:"],
        "tfds:NAME",
        "data",
    ),
    ("preset-dev-zero", "probe", ["--preset=/dev/zero"], "is a file", "model"),
    (
        "preset-no-config",
        "evaluate",
        ["--preset={T}"],
        "no config.json",
        "model",
    ),
    (
        "dataset-fifo",
        "evaluate",
        ["--preset={classifier}", "--dataset={fifo}"],
        "existing image folder",
        "data",
    ),
    (
        "split-all-builtin",
        "evaluate",
        ["--preset={classifier}", "--dataset=digits", "--split=all"],
        "train and test splits only",
        "data",
    ),
    (
        "ablations-unknown",
        "reproduce_findings",
        ["--ablations=head,bogus"],
        "bogus",
        "model",
    ),
    (
        "ablation-size",
        "reproduce_findings",
        ["--ablation_size=w999"],
        "w999",
        "model",
    ),
    (
        "widths-heads",
        "reproduce_findings",
        ["--quick", "--widths=9", "--num_heads=4"],
        "does not divide",
        "model",
    ),
    (
        "width-heads",
        "pretrain",
        ["--hidden_dim=64", "--num_heads=128"],
        "num_heads",
        "model",
    ),
    (
        "nan-classifier",
        "evaluate",
        ["--preset={nan}", "--dataset={images}"],
        "NaN or infinite",
        "data",
    ),
    (
        "names-nfd",
        "evaluate",
        ["--preset={classifier}", "--dataset={nfd}"],
        "do not match",
        "data",
    ),
    (
        "names-builtin",
        "evaluate",
        ["--preset={classifier}", "--dataset=digits"],
        "would mean other classes",
        "data",
    ),
]


@pytest.mark.parametrize(
    "script,args,message,stage",
    [a[1:] for a in ATTACKS],
    ids=[a[0] for a in ATTACKS],
)
def test_attacks_exit_2_with_one_line(
    script, args, message, stage, files, tmp_path, capsys, request
):
    if stage != "data":
        request.getfixturevalue("no_work")
    keep = any(a.startswith("--output_dir") for a in args)
    error = refused(script, args, files, tmp_path, capsys, not keep)
    assert message in error
    if stage == "flags":  # nothing was created
        assert not (tmp_path / "out").exists()


def test_tensorflow_logical_replicas_are_bounded(monkeypatch):
    example_utils = load_example("example_utils")
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    pytest.importorskip("tensorflow")
    with pytest.raises(ValueError, match="at most 64"):
        example_utils.prepare_tensorflow_devices("data", "99999x1")


def test_export_reads_class_names_from_the_model_not_a_file(files):
    export = load_example("export")
    classifier = keras_aim.AIMImageClassifier.from_preset(files["classifier"])
    assert export.class_names(classifier) == ["café", "tea"]
    os.mkfifo(os.path.join(files["T"], "classifier", "class_names.json"))
    try:  # a FIFO there once hung export.py; nothing reads it now
        assert export.class_names(classifier) == ["café", "tea"]
    finally:
        os.remove(os.path.join(files["T"], "classifier", "class_names.json"))
