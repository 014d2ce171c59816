"""Round two, class 3: silent wrong results in the example scripts.

- `examples/evaluate.py` labels an image folder by the classifier's saved
  class names (`probe.py` and `finetune.py` save them): generated folders
  with empty, extra, missing and renamed class folders either give the
  exact labels (a classifier built to be perfect on them scores 100%) or
  exit 2; a classifier without saved names only takes an unambiguous
  folder.
- Every numeric flag of every example is checked when the flags are
  parsed: generated from each script's own flag table, every value below,
  above, not finite or not a number exits 2 naming the flag, before the
  output folder exists.
- Every training path of `probe.py` and `finetune.py` has the NaN guard:
  a diverging run exits 3, says so, and writes no metrics or classifier;
  non-finite logits never become an accuracy.
"""

import math
import os
import string

import keras
import numpy as np
import pytest
from conftest import exit_error
from conftest import load_example
from hypothesis import HealthCheck
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from PIL import Image

import keras_aim
from keras_aim import data
from keras_aim import probing
from keras_aim.models.aim.aim_image_converter import default_image_converter

SCRIPTS = (
    "pretrain",
    "probe",
    "finetune",
    "evaluate",
    "extract_features",
    "export",
    "reproduce_findings",
)
SOME = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
    ],
)
NAMES = ("ant", "bee", "cat", "dog", "eel", "fox")
COLOURS = {
    name: tuple(int(v) for v in rgb)
    for name, rgb in zip(
        NAMES,
        [(230, 30, 30), (30, 200, 40), (40, 40, 220), (240, 220, 20)]
        + [(20, 220, 220), (200, 30, 200)],
    )
}
COLOURS["gnu"] = (120, 120, 120)  # the class no model knows


def write_class(folder, name, count):
    os.makedirs(folder / name, exist_ok=True)
    for index in range(count):
        Image.new("RGB", (16, 16), COLOURS[name]).save(
            folder / name / f"{name}_{index}.png"
        )


# --- evaluate.py: labels by the classifier's saved class names ------------


@pytest.fixture(scope="module")
def perfect(tmp_path_factory):
    """Classifier presets (with and without saved class names) whose
    linear head is solved to map each class colour to its own label."""
    keras.utils.set_random_seed(0)
    backbone = keras_aim.AIMBackbone(
        image_shape=(16, 16, 3),
        patch_size=4,
        hidden_dim=32,
        num_layers=2,
        num_heads=2,
    )
    converter = default_image_converter((16, 16, 3))
    folder = tmp_path_factory.mktemp("all_classes")
    for name in NAMES:
        write_class(folder, name, 1)
    images, labels = data.labelled_images(
        str(folder), "all", image_converter=converter
    ).to_arrays()
    assert labels.tolist() == list(range(len(NAMES)))
    tokens = keras.ops.convert_to_numpy(
        backbone.extract_features(images, [1])[0]
    )
    pooled = tokens.mean(axis=1) / math.sqrt(1.0 + 1e-6)  # BatchNorm at init
    design = np.concatenate([pooled, np.ones((len(pooled), 1))], axis=1)
    solved = np.linalg.lstsq(design, 10.0 * np.eye(len(NAMES)), rcond=None)
    presets = {}
    for named in (True, False):
        classifier = keras_aim.AIMImageClassifier(
            backbone,
            num_classes=len(NAMES),
            probe="linear",
            probe_layers=[1],
            image_converter=converter,
            class_names=list(NAMES) if named else None,
        )
        head = classifier.probe_head.classifier
        head.kernel.assign(solved[0][:-1].astype("float32"))
        head.bias.assign(solved[0][-1].astype("float32"))
        logits = keras.ops.convert_to_numpy(classifier(images))
        assert logits.argmax(-1).tolist() == list(range(len(NAMES)))
        path = str(tmp_path_factory.mktemp("preset") / "classifier")
        classifier.save_to_preset(path)
        presets[named] = path
    return presets


def evaluate_folder(preset, folder, tmp_path, capsys, code=0):
    evaluate = load_example("evaluate")
    args = [
        f"--preset={preset}",
        f"--dataset={folder}",
        f"--output_dir={tmp_path / 'out'}",
    ]
    if code:
        return exit_error(evaluate.main, args, capsys, code)
    return evaluate.main(args)


DAMAGE = ("none", "extra", "extra_empty", "missing", "renamed", "hidden")


FOLDERS = dict(
    empty=st.sets(st.sampled_from(NAMES), max_size=len(NAMES) - 1),
    counts=st.lists(st.integers(1, 2), min_size=6, max_size=6),
    damage=st.sampled_from(DAMAGE),
    victim=st.sampled_from(NAMES),
)


@pytest.mark.large(backend="tensorflow")
@settings(SOME, max_examples=4)
@given(**FOLDERS)
def test_evaluate_labels_folders_by_the_saved_class_names(
    perfect, tmp_path_factory, capsys, empty, counts, damage, victim
):
    check_folder(
        perfect, tmp_path_factory, capsys, empty, counts, damage, victim
    )


@pytest.mark.extra_large
@settings(SOME, max_examples=40)
@given(**FOLDERS)
def test_evaluate_labels_many_generated_folders(
    perfect, tmp_path_factory, capsys, empty, counts, damage, victim
):
    check_folder(
        perfect, tmp_path_factory, capsys, empty, counts, damage, victim
    )


def check_folder(
    perfect, tmp_path_factory, capsys, empty, counts, damage, victim
):
    root = tmp_path_factory.mktemp("folder")
    folder = root / "data"
    expected = 0
    for name, count in zip(NAMES, counts):
        if name in empty:
            os.makedirs(folder / name)  # a class without images
        else:
            write_class(folder, name, count)
            expected += count
    if damage in ("extra", "extra_empty"):
        write_class(folder, "gnu", 0 if damage == "extra_empty" else 1)
    elif damage == "missing":
        for path in (folder / victim).iterdir():
            path.unlink()
        (folder / victim).rmdir()
    elif damage == "renamed":
        os.rename(folder / victim, folder / (victim + "s"))
    elif damage == "hidden":  # a notebook's folder, not a class
        os.makedirs(folder / ".ipynb_checkpoints")
    if damage in ("none", "hidden") and expected:
        metrics = evaluate_folder(perfect[True], folder, root, capsys)
        # Shifted labels would score near 0: each class maps by its name.
        assert metrics["top1"] == 1.0
        assert metrics["num_test"] == expected
        return
    if not expected and damage in ("none", "hidden"):
        error = evaluate_folder(perfect[True], folder, root, capsys, 2)
        assert "no readable images" in error
        return
    error = evaluate_folder(perfect[True], folder, root, capsys, 2)
    assert "do not match the model's 6 classes" in error
    assert "gnu" in error if damage.startswith("extra") else victim in error
    assert not (root / "out" / "metrics.json").exists()


@pytest.mark.parametrize("empty", [(), ("cat",), ("ant", "fox")])
def test_without_saved_names_only_an_unambiguous_folder(
    perfect, tmp_path, capsys, empty
):
    folder = tmp_path / "data"
    for name in NAMES:
        write_class(folder, name, 0 if name in empty else 1)
    if not empty:
        metrics = evaluate_folder(perfect[False], folder, tmp_path, capsys)
        assert metrics["top1"] == 1.0 and metrics["num_test"] == len(NAMES)
        return
    error = evaluate_folder(perfect[False], folder, tmp_path, capsys, 2)
    assert "saves no class names" in error and empty[0] in error


def test_built_in_data_must_have_the_saved_names(perfect, tmp_path, capsys):
    error = evaluate_folder(perfect[True], "digits", tmp_path, capsys, 2)
    assert "labels would mean other classes" in error


@settings(max_examples=40, deadline=None)
@given(
    names=st.lists(
        st.text(string.ascii_letters + "_-. ", min_size=1, max_size=8).filter(
            lambda n: n.strip(" .") == n and not n.startswith(".")
        ),
        min_size=1,
        max_size=5,
        unique=True,
    ),
    data_=st.data(),
)
def test_labelled_folder_labels_are_the_index_of_the_folder_name(
    tmp_path_factory, names, data_
):
    """The library's mapping, against the folder names themselves."""
    order = data_.draw(st.permutations(names))  # the model's order
    empty = data_.draw(st.sets(st.sampled_from(names)))
    folder = tmp_path_factory.mktemp("named")
    expected = {}
    for index, name in enumerate(names):
        os.makedirs(folder / name)
        if name in empty:
            continue
        path = folder / name / "x.png"
        Image.new("RGB", (4, 4), (index, 0, 0)).save(path)
        expected[str(path)] = order.index(name)
    if not expected:
        with pytest.raises(ValueError, match="no readable images"):
            data.labelled_images(str(folder), "all", class_names=order)
        return
    images = data.labelled_images(
        str(folder), "all", image_size=4, class_names=order
    )
    assert images.class_names == order and images.empty_classes == []
    labels = [int(y) for _, y in images.dataset]
    assert dict(zip(images.files, labels)) == expected
    unnamed = data.labelled_images(str(folder), "all", image_size=4)
    assert sorted(unnamed.empty_classes) == sorted(empty)
    with pytest.raises(ValueError, match="no sub-folder for the model"):
        data.labelled_images(str(folder), "all", class_names=[*order, "zz"])
    if len(order) > 1:
        with pytest.raises(ValueError, match="not classes of the model"):
            data.labelled_images(str(folder), "all", class_names=order[1:])


def test_probe_saves_its_class_names(tmp_path):
    keras.utils.set_random_seed(0)
    backbone = keras_aim.AIMBackbone(
        image_shape=(16, 16, 3),
        patch_size=4,
        hidden_dim=16,
        num_layers=2,
        num_heads=2,
    )
    train = data.labelled_images(
        "photos", "train", image_size=16, crops_per_image=2
    )
    classifier = probing.train_probe(
        backbone, train, probe="linear", epochs=1, verbose=0
    )
    assert classifier.class_names == train.class_names
    classifier.save_to_preset(str(tmp_path / "c"))
    restored = keras_aim.AIMImageClassifier.from_preset(str(tmp_path / "c"))
    assert restored.class_names == train.class_names
    fresh = keras_aim.AIMImageClassifier.from_preset(
        str(tmp_path / "c"), num_classes=3, load_weights=False
    )
    assert fresh.class_names is None  # names belong to the saved head
    for bad, match in (
        (["a"] * 2, "more than once"),
        (["a"], "one name per class"),
        ("ab", "list of strings"),
        (["a", ""], "non-empty strings"),
    ):
        with pytest.raises(ValueError, match=match):
            keras_aim.AIMImageClassifier(
                backbone, num_classes=2, probe_layers=[1], class_names=bad
            )


# --- Every numeric flag, from the scripts' own tables ---------------------


def numeric_flags():
    cases = []
    for name in SCRIPTS:
        module = load_example(name)
        for item in module.SCRIPT.flags:
            minimum, maximum = item.bounds()
            if minimum is not None:
                cases.append((name, item))
    return cases


def bad_values(item):
    """Values every numeric flag must refuse, from its own bounds."""
    minimum, maximum = item.bounds()
    number = item.element or item.kind
    small = minimum - (1 if number == "integer" else 1e-3 * max(1, minimum))
    values = [small, "abc", "1e400" if number == "float" else "1.5"]
    if item.positive:
        values.append(0)
    if maximum is not None:
        big = maximum + 1 if number == "integer" else maximum * 1.001 + 1e-9
        values += [big, 10**30 if number == "integer" else "1e300"]
    if number == "float":
        values += ["nan", "inf", "-inf", "NaN"]
    if item.kind == "list":
        good = minimum + 1 if not item.positive else (maximum or 1)
        values = [f"{good},{value}" for value in values]
    return values


NUMERIC = numeric_flags()


def test_every_numeric_flag_is_bounded_and_shared_limits_agree():
    from keras_aim.utils.validation import SIZE_LIMITS

    flag_table = load_example("flag_table")
    for key, limit in flag_table.LIMITS.items():
        assert SIZE_LIMITS[key] == limit, key
    assert len(NUMERIC) > 40  # every script has some
    for script, item in NUMERIC:
        minimum, maximum = item.bounds()
        if (item.element or item.kind) == "integer":
            assert maximum is not None, (script, item.name)
        assert minimum is not None, (script, item.name)


@pytest.mark.parametrize(
    "script,item", NUMERIC, ids=[f"{s}-{f.name}" for s, f in NUMERIC]
)
def test_every_bad_number_exits_2_before_any_work(
    script, item, tmp_path, capsys
):
    module = load_example(script)
    output_dir = tmp_path / "out"
    for value in bad_values(item):
        error = exit_error(
            module.main,
            [f"--{item.name}={value}", f"--output_dir={output_dir}"],
            capsys,
        )
        assert f"--{item.name}=" in error, (value, error)
        assert not output_dir.exists()  # refused before any work


@pytest.mark.parametrize(
    "script,item", NUMERIC, ids=[f"{s}-{f.name}" for s, f in NUMERIC]
)
def test_the_bounds_themselves_are_accepted(script, item):
    from absl import flags

    module = load_example(script)
    minimum, maximum = item.bounds()
    for value in (minimum, maximum):
        if value is None or (item.positive and value == minimum):
            continue
        values = module.define_flags(flags.FlagValues())
        values([script, f"--{item.name}={value}"])  # parses, validates
        got = values[item.name].value
        got = got[0] if item.kind == "list" else got
        assert float(got) == value, (value, got)


# --- The NaN guard of every probe and fine-tuning path ----------------------


@pytest.fixture(scope="module")
def diverging(tmp_path_factory):
    """A backbone preset that trains to NaN: one trunk weight is inf."""
    keras.utils.set_random_seed(0)
    backbone = keras_aim.AIMBackbone(
        image_shape=(16, 16, 3),
        patch_size=4,
        hidden_dim=16,
        num_layers=2,
        num_heads=2,
    )
    kernel = backbone.transformer_blocks[0].mlp_fc2.kernel
    value = keras.ops.convert_to_numpy(kernel).copy()
    value[0, 0] = np.inf
    kernel.assign(value)
    folder = str(tmp_path_factory.mktemp("diverging") / "backbone")
    backbone.save_to_preset(folder)
    return folder


@pytest.mark.parametrize(
    "script,args",
    [
        ("probe", ["--cache_features"]),
        ("probe", ["--nocache_features", "--probe=linear"]),
        ("finetune", ["--lora_rank=2"]),
        ("finetune", ["--lora_rank=0", "--layer_decay=0.5"]),
    ],
)
def test_a_diverging_run_exits_3_and_writes_no_result(
    diverging, script, args, tmp_path, capsys
):
    module = load_example(script)
    output_dir = tmp_path / "out"
    error = exit_error(
        module.main,
        [
            f"--preset={diverging}",
            "--dataset=photos",
            "--epochs=1",
            "--batch_size=256",
            f"--output_dir={output_dir}",
            *args,
        ],
        capsys,
        code=3,
    )
    assert "Training diverged" in error and "Nothing was saved" in error
    left = sorted(os.listdir(output_dir))
    assert left == [".lock"], left  # no metrics.json, classifier/, cache


def test_non_finite_logits_are_refused_not_scored():
    logits = np.zeros((4, 3))
    logits[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite for 1 of 4"):
        probing.classification_metrics(logits, np.array([0, 1, 2, 0]), 3)
