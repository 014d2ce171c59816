"""Round two, class 4 (the scripts' part): output folders shared by two runs.

Every example that writes (pretrain, probe, finetune, evaluate,
extract_features, export, reproduce_findings) creates, locks and checks
its `--output_dir` before any work (`scaffold.writes` / `run_folder`):

- a folder another run holds exits 2 with one line naming the holder,
  and nothing is written there;
- generated from each script's own list of outputs: a file where it
  writes a folder, a folder, FIFO, socket, device or broken link where it
  writes a file, a preset folder holding foreign files: exit 2 naming the
  path, before any work;
- a `.lock` that is a folder, a FIFO or a link (which would truncate its
  target) is refused, the target untouched;
- the probe's feature cache lives in the run's own folder under a unique
  name and is gone after success and failure (the library part:
  `test_reliability_temp.py`).
"""

import fcntl
import os
import signal
import subprocess
import sys
import time

import keras
import pytest
from conftest import exit_error
from conftest import load_example
from conftest import stderr_report
from hostile import make_hostile
from PIL import Image

import keras_aim
from keras_aim.probing import features as features_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WRITERS = (
    "pretrain",
    "probe",
    "finetune",
    "evaluate",
    "extract_features",
    "export",
    "reproduce_findings",
)
# What sits in the way of each kind of output.
IN_THE_WAY = {
    "file": ("directory", "fifo", "socket", "dev_zero", "broken_link"),
    "folder": ("file", "fifo", "broken_link", "link_loop"),
    "preset": ("file", "fifo", "foreign"),
}


def outputs_of(name):
    module = load_example(name)
    return getattr(module.run, "outputs", None) or module.OUTPUTS


def put(path, kind):
    if kind == "file":
        path.write_text("not a folder")
    elif kind == "foreign":
        path.mkdir()
        (path / "notes.txt").write_text("mine")
    else:
        make_hostile(path, kind)


@pytest.fixture
def no_work(monkeypatch):
    """Fails the test if a script starts real work (data, training,
    model loading) instead of refusing first."""

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
        (keras_aim.AIMBackbone, "from_preset"),
        (keras_aim.AIMImageClassifier, "from_preset"),
    ):
        monkeypatch.setattr(module, name, work)


def hold_lock(folder):
    """Holds `folder/.lock` as another run would (a separate open file:
    `flock` conflicts even within one process)."""
    os.makedirs(folder, exist_ok=True)
    descriptor = os.open(os.path.join(folder, ".lock"), os.O_RDWR | os.O_CREAT)
    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(descriptor, b"process 4242 on elsewhere (since today)\n")
    return descriptor


@pytest.mark.parametrize("script", WRITERS)
def test_a_held_folder_exits_2_naming_the_holder(
    script, tmp_path, capsys, no_work
):
    folder = tmp_path / "run"
    descriptor = hold_lock(folder)
    try:
        error = exit_error(
            load_example(script).main,
            ["--preset=aim_600m", f"--output_dir={folder}"],
            capsys,
        )
    finally:
        os.close(descriptor)
    assert "is in use by process 4242 on elsewhere" in error
    assert os.listdir(folder) == [".lock"]


CASES = [
    (script, name, kind)
    for script in WRITERS
    for name, kind in outputs_of(script).items()
]


@pytest.mark.parametrize(
    "script,name,kind",
    CASES,
    ids=[f"{s}-{n}" for s, n, _ in CASES],
)
def test_what_sits_in_the_way_of_an_output_exits_2_first(
    script, name, kind, tmp_path, capsys, no_work
):
    module = load_example(script)
    for index, thing in enumerate(IN_THE_WAY[kind]):
        folder = tmp_path / f"run{index}"
        folder.mkdir()
        put(folder / name, thing)
        before = sorted(os.listdir(folder))
        error = exit_error(
            module.main,
            ["--preset=aim_600m", f"--output_dir={folder}"],
            capsys,
        )
        assert str(folder / name) in error, (thing, error)
        assert sorted(os.listdir(folder)) == sorted([*before, ".lock"])


def test_every_writer_declares_its_outputs():
    assert len(CASES) >= 30
    kinds = {kind for _, _, kind in CASES}
    assert kinds == set(IN_THE_WAY)
    assert outputs_of("pretrain")["checkpoints"] == "folder"
    assert outputs_of("pretrain")["log.csv"] == "file"


@pytest.mark.parametrize("thing", ["directory", "fifo", "symlink"])
def test_a_hostile_lock_file_is_refused(thing, tmp_path, capsys, no_work):
    folder = tmp_path / "run"
    folder.mkdir()
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    if thing == "symlink":
        os.symlink(target, folder / ".lock")
    else:
        make_hostile(folder / ".lock", thing)
    error = exit_error(
        load_example("probe").main,
        ["--preset=x", f"--output_dir={folder}"],
        capsys,
    )
    assert "Cannot take the run lock" in error
    assert target.read_text() == "keep me"


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    keras.utils.set_random_seed(0)
    backbone = keras_aim.AIMBackbone(
        image_shape=(16, 16, 3),
        patch_size=4,
        hidden_dim=16,
        num_layers=2,
        num_heads=2,
    )
    folder = str(tmp_path_factory.mktemp("preset") / "backbone")
    backbone.save_to_preset(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    images = tmp_path_factory.mktemp("tiny_images")
    for label in range(2):
        (images / f"class{label}").mkdir(parents=True)
        for index in range(6):
            Image.new("RGB", (16, 16), (80 * label, index, 9)).save(
                images / f"class{label}" / f"{index}.png"
            )
    return str(images)


@pytest.mark.parametrize("fails", [False, True])
@pytest.mark.large(backend="torch")
def test_the_probe_cache_is_in_the_run_folder_and_gone_after(
    preset, tiny_folder, tmp_path, monkeypatch, fails
):
    made = []
    original = features_module.temporary_memmap

    def spy(shape, folder=None, dtype="float32"):
        made.append(folder)
        assert os.path.realpath(folder) == os.path.realpath(tmp_path / "ok")
        return original(shape, folder, dtype)

    def fail(*args, **kwargs):
        raise OSError("the disk went away")

    from keras_aim.probing import probes

    monkeypatch.setattr(features_module, "IN_MEMORY_LIMIT_BYTES", 0)
    monkeypatch.setattr(features_module, "temporary_memmap", spy)
    if fails:
        monkeypatch.setattr(probes, "fit_or_diverge", fail)
    monkeypatch.chdir(tmp_path)
    probe = load_example("probe")
    args = [
        f"--preset={preset}",
        f"--dataset={tiny_folder}",
        "--epochs=1",
        f"--output_dir={tmp_path / 'ok'}",
    ]
    if fails:
        with pytest.raises(OSError, match="went away"):
            probe.main(args)
    else:
        probe.main(args)
    assert len(made) == 1  # the cache was made (then the run failed)
    left = {".lock"} if fails else {".lock", "metrics.json", "confusion.png"}
    left |= set() if fails else {"classifier"}
    assert set(os.listdir(tmp_path / "ok")) == left
    assert sorted(os.listdir(tmp_path)) == ["ok"]  # nothing in the cwd


def test_a_finished_run_releases_the_folder(preset, tmp_path):
    extract = load_example("extract_features")
    for _ in range(2):
        extract.main(
            [
                f"--preset={preset}",
                "--split=test",
                "--pool=mean",
                f"--output_dir={tmp_path}",
            ]
        )
    assert sorted(os.listdir(tmp_path)) == [".lock", "features.npz"]


# `make test-all`: the lock of the in-process tests above, across two real
# processes and a real SIGTERM.
@pytest.mark.extra_large
def test_two_real_probes_into_one_folder(preset, tmp_path):
    """A live probe holds its folder; a second command exits 2 naming it;
    a SIGTERM leaves no result, cache or temporary file behind."""
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    code = (
        "import sys; sys.argv[0] = 'probe'; "
        "from keras_aim.probing import features; "
        "features.IN_MEMORY_LIMIT_BYTES = 0; "
        f"sys.path.insert(0, {os.path.join(ROOT, 'examples')!r}); "
        "import probe; probe.main(sys.argv[1:])"
    )
    folder = tmp_path / "run"
    args = [f"--preset={preset}", "--epochs=5000", f"--output_dir={folder}"]
    first = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 300
        lock = folder / ".lock"
        while time.time() < deadline and first.poll() is None:
            if lock.exists() and lock.read_text().strip():
                break
            time.sleep(0.2)
        assert first.poll() is None, first.stderr.read()[-2000:]
        second = subprocess.run(
            [sys.executable, os.path.join(ROOT, "examples", "probe.py"), *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert second.returncode == 2, stderr_report(second.stderr)
        errors = [x for x in second.stderr.splitlines() if "ERROR" in x]
        assert len(errors) == 1 and f"process {first.pid}" in errors[0]
        time.sleep(5)  # into the features or the training
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=120) != 0
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert sorted(os.listdir(folder)) == [".lock"]
