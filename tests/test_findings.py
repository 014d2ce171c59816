"""examples/reproduce_findings.py end to end (--quick), its statistics
against independent computations, its resume, its command line (bad input
in-process through `main`; one real command, `large`), and RepeatedProbe
against a fresh probe."""

import json
import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import exit_error
from conftest import load_example
from scipy import stats

import keras_aim
from keras_aim import probing
from keras_aim.data.labelled import labelled_images
from keras_aim.models.aim.aim_image_converter import default_image_converter
from keras_aim.probing.repeated import RepeatedProbe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "examples", "reproduce_findings.py")
BACKEND = keras.backend.backend()
sys.path.insert(0, os.path.join(ROOT, "examples"))


findings_script = load_example("reproduce_findings")
from findings import stats as study_stats  # noqa: E402
from findings import study  # noqa: E402


@pytest.mark.large(backend="tensorflow")
def test_repeated_probe_equals_a_fresh_probe_at_every_call():
    keras.utils.set_random_seed(0)
    backbone = keras_aim.AIMBackbone(
        image_shape=(16, 16, 3),
        patch_size=4,
        hidden_dim=16,
        num_layers=1,
        num_heads=2,
    )
    converter = default_image_converter(backbone.image_shape)
    splits = [
        labelled_images("digits", s, image_converter=converter, seed=0)
        for s in ("train", "test")
    ]
    repeated = RepeatedProbe(
        backbone, *splits, epochs=2, learning_rate=1e-2, seed=0
    )
    for _ in range(2):  # the second call runs on changed trunk weights
        got = repeated()
        fresh = probing.probe_accuracy(
            backbone, "digits", epochs=2, learning_rate=1e-2, seed=0
        )
        assert got["top1"] == pytest.approx(fresh["top1"], abs=1e-9)
        np.testing.assert_array_equal(got["confusion"], fresh["confusion"])
        for variable in backbone.weights:
            variable.assign(variable * 1.5)


@pytest.mark.parametrize(
    "values",
    [
        [3.0, 1.0, 2.0, 2.0, 5.0],
        [0.1, 0.1, 0.1, 0.2],
        list(np.random.default_rng(0).normal(size=30)),
    ],
)
def test_spearman_matches_scipy(values):
    other = list(np.random.default_rng(1).permutation(len(values)) % 4)
    expected = stats.spearmanr(values, other).statistic
    assert study_stats.spearman(values, other) == pytest.approx(expected)


def test_verdicts_use_the_t_interval():
    verdict = study_stats.verdict
    # mean -0.02, std 0.01, 3 seeds: t(2) * 0.01 / sqrt(3) = 0.0248 > 0.02.
    assert verdict(-0.02, 0.01, 3, -1) == "within noise"
    assert verdict(-0.03, 0.01, 3, -1) == "reproduces"
    assert verdict(0.03, 0.01, 3, -1) == "opposite"
    assert verdict(0.03, 0.0, 1, -1) == "one seed: no verdict"
    # No claim to test (an ablation that is not the paper's): the side.
    assert verdict(-0.03, 0.01, 3, 0) == "variant lower"
    assert verdict(0.03, 0.01, 3, 0) == "variant higher"
    assert verdict(0.02, 0.01, 3, 0) == "within noise"


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="Unknown --ablations"):
        study.study_config(ablations=("heads",))
    with pytest.raises(ValueError, match="end with 1.0"):
        study.study_config(checkpoint_fractions=(0.5,))
    with pytest.raises(ValueError, match="does not divide"):
        study.study_config(widths=(30,))
    with pytest.raises(ValueError, match="--seeds"):
        study.study_config(seeds=0)
    with pytest.raises(ValueError, match="preset names"):
        study.study_config(preset="aim_9b")
    with pytest.raises(ValueError, match="Unknown settings"):
        study.study_config(sizes=3)


# (arguments, what the one ERROR line says): each exits 2 before a run.
BAD_FLAGS = [
    (["--seeds=0"], "--seeds=0"),
    (["--sedes=2"], "Unknown command line flag 'sedes'"),
    (["--quick=maybe"], "--quick=maybe"),
    (["--steps=-1"], "--steps=-1"),
    (["--batch_size=0"], "--batch_size=0"),
    (["--learning_rate=0"], "must be positive"),
    (["--head_num_layers=-1"], "--head_num_layers=-1"),
    (["--ablations=heads"], "Unknown --ablations ['heads']"),
    (["--checkpoint_fractions=0.5"], "end with 1.0"),
    (["--checkpoint_fractions=half,1"], "takes comma-separated floats"),
    (["--widths=30"], "does not divide"),
    (["--widths=a,16"], "takes comma-separated integers"),
    (["--preset=aim_9b"], "preset names"),
    (["--quick", "--ablation_size=w99"], "--ablation_size must be one of"),
    (["stray"], "Unexpected arguments"),
]


@pytest.mark.parametrize("args,message", BAD_FLAGS)
def test_bad_flags_exit_2_with_one_line(args, message, tmp_path, capsys):
    output_dir = str(tmp_path / "study")
    error = exit_error(
        findings_script.main, [*args, f"--output_dir={output_dir}"], capsys
    )
    assert message in error
    assert not os.path.exists(os.path.join(output_dir, "runs"))


@pytest.mark.large
def test_command_line_bad_flag_exits_2(tmp_path):
    """The real command: absl's app.run on the global flags."""
    result = subprocess.run(
        [sys.executable, SCRIPT, "--seeds=0", f"--output_dir={tmp_path}"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=ROOT),
        timeout=300,
    )
    assert result.returncode == 2
    errors = [ln for ln in result.stderr.splitlines() if "ERROR" in ln]
    assert len(errors) == 1 and "--seeds" in errors[0]


def _check_findings(output_dir, config):
    with open(os.path.join(output_dir, "findings.json")) as f:
        findings = json.load(f)
    for name in ("findings.md", "loss_vs_capacity.png", "loss_vs_steps.png"):
        assert os.path.getsize(os.path.join(output_dir, name)) > 0
    assert os.path.getsize(os.path.join(output_dir, "loss_vs_probe.png")) > 0
    points = findings["points"]
    sizes, steps = config["sizes"], config["checkpoint_steps"]
    assert len(points) == config["seeds"] * len(sizes) * len(steps)
    for point in points:
        assert {"size", "step", "heldout_loss", "probe_top1"} <= set(point)
        assert 0 <= point["probe_top1"] <= 1 and point["heldout_loss"] > 0
    # The correlation, recomputed from the written points with SciPy.
    expected = stats.spearmanr(
        [p["heldout_loss"] for p in points], [p["probe_top1"] for p in points]
    ).statistic
    assert findings["spearman_loss_vs_probe"] == pytest.approx(expected)
    # Each ablation's paired difference, recomputed from the runs' files.
    base = config["ablation_size"]
    assert [a["name"] for a in findings["ablations"]] == list(
        config["ablations"]
    )
    for ablation in findings["ablations"]:
        assert {"name", "default", "variant"} <= set(ablation)
        differences, losses = [], []
        for seed in range(config["seeds"]):
            ends = []
            for suffix in ("", f"_{ablation['name']}"):
                path = os.path.join(
                    output_dir,
                    "runs",
                    f"{base}_seed{seed}{suffix}",
                    "result.json",
                )
                with open(path) as f:
                    ends.append(json.load(f)["points"][-1])
            differences.append(ends[1]["probe_top1"] - ends[0]["probe_top1"])
            losses.append(ends[1]["heldout_loss"] - ends[0]["heldout_loss"])
        if ablation["name"] == "targets":  # raw pixels: another loss scale
            assert ablation["loss_difference"] is None
        else:
            assert ablation["loss_difference"] == pytest.approx(
                [np.mean(losses), np.std(losses, ddof=1)]
                if len(losses) > 1
                else [np.mean(losses), 0.0]
            )
        assert ablation["difference_mean"] == pytest.approx(
            np.mean(differences)
        )
        assert ablation["difference_std"] == pytest.approx(
            np.std(differences, ddof=1) if len(differences) > 1 else 0.0
        )
    # The markdown holds the same numbers.
    with open(os.path.join(output_dir, "findings.md")) as f:
        text = f.read()
    assert f"{findings['spearman_loss_vs_probe']:.3f}" in text
    return findings


# Its runs are also the --quick study's (the same settings).
SMALL = dict(quick=True, seeds=1, widths=(8, 16), ablations=("head",))


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("small") / "study")
    lines = []
    findings_script.run(progress=lines.append, output_dir=output_dir, **SMALL)
    return output_dir, lines


@pytest.mark.large
def test_small_study_on_every_backend(small_study):
    output_dir, lines = small_study
    config = study.study_config(output_dir=output_dir, **SMALL)
    assert len(lines) == len(study.planned_runs(config)) == 3
    assert all("reused" not in line for line in lines)
    _check_findings(output_dir, config)


@pytest.mark.extra_large
@pytest.mark.skipif(
    BACKEND != "torch",
    reason="the whole --quick study (eight runs) on one backend is enough",
)
def test_quick_study_end_to_end_and_resume(small_study, tmp_path):
    output_dir = str(tmp_path / "study")
    # The small study's three runs are reused; the five others train.
    shutil.copytree(
        os.path.join(small_study[0], "runs"), os.path.join(output_dir, "runs")
    )
    lines = []
    findings = findings_script.run(
        progress=lines.append, quick=True, output_dir=output_dir
    )
    config = study.study_config(quick=True, output_dir=output_dir)
    assert len(lines) == len(study.planned_runs(config)) == 8
    reused = sorted(line.split(" (")[0] for line in lines if "reused" in line)
    assert reused == [
        "[1/8] w8 seed 0",
        "[2/8] w16 seed 0",
        "[4/8] w16 seed 0",
    ]
    again = _check_findings(output_dir, config)
    assert again["points"] == json.loads(json.dumps(findings["points"]))
    # A killed study: one run's result is gone and another's is corrupt;
    # the rerun reuses the other runs and gives the same findings.
    runs = os.path.join(output_dir, "runs")
    os.remove(os.path.join(runs, "w16_seed1_head", "result.json"))
    with open(os.path.join(runs, "w8_seed0", "result.json"), "w") as f:
        f.write('{"points": [')
    lines = []
    resumed = findings_script.run(
        progress=lines.append, quick=True, output_dir=output_dir
    )
    assert sum("reused" in line for line in lines) == 6
    assert resumed["points"] == findings["points"]
    assert resumed["ablations"] == findings["ablations"]
