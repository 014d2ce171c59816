"""SIGKILL a real pre-training process at several points, resume each time.

A tiny `examples/pretrain.py` run (checkpoint after every step, so a good
share of its time is spent writing checkpoints) is killed with SIGKILL:
once while a checkpoint is being written, once between steps, once after a
seeded random number of further steps; each time the same command is run
again. The final loss log and the final backbone weights must equal an
uninterrupted run's (within float32 tolerance: they come from different
processes), and no completed checkpoint may be lost.
"""

import csv
import os
import random
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import keras_aim
from keras_aim import training

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "pretrain.py")
SETTINGS = dict(
    steps=10,
    batch_size=8,
    hidden_dim=32,
    num_layers=1,
    num_heads=2,
    head_hidden_dim=32,
    head_num_layers=1,
    checkpoint_every=1,
    keep_checkpoints=2,
    log_every=1,
    num_preview=0,
    noprobe=None,
    verbose=0,
)
ARGS = [f"--{k}" if v is None else f"--{k}={v}" for k, v in SETTINGS.items()]


def command(output_dir):
    return [sys.executable, EXAMPLE, *ARGS, f"--output_dir={output_dir}"]


def environment():
    return dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")


def rows(output_dir):
    """The (step, loss) rows of the run's log; [] while there is none.

    Polled while the run is alive: a run that starts over removes the old
    log (between our look and our read), and a row may be half-written.
    Both read as "not there yet"; the final comparison reads a closed file.
    """
    path = os.path.join(output_dir, training.LOG_FILE)
    try:
        with open(path, newline="") as f:
            return [
                (int(r["step"]), float(r["loss"])) for r in csv.DictReader(f)
            ]
    except (FileNotFoundError, TypeError, ValueError):
        return []


def completed(output_dir):
    folder = os.path.join(output_dir, training.CHECKPOINT_DIR)
    return training.CheckpointManager(folder).checkpoints()


def run_until(output_dir, condition, timeout=300):
    """Starts the run and SIGKILLs it once `condition()` holds."""
    process = subprocess.Popen(
        command(output_dir), env=environment(), stderr=subprocess.DEVNULL
    )
    deadline = time.time() + timeout
    while process.poll() is None and time.time() < deadline:
        if condition():
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.005)
    process.wait(timeout=60)
    return process.returncode


def writing_a_checkpoint(output_dir):
    folder = os.path.join(output_dir, training.CHECKPOINT_DIR)

    def condition():
        try:
            return any(n.startswith(".tmp_") for n in os.listdir(folder))
        except FileNotFoundError:
            return False

    return condition


def backbone_weights(output_dir):
    backbone = keras_aim.AIMBackbone.from_preset(
        os.path.join(output_dir, "backbone")
    )
    return [keras.ops.convert_to_numpy(w) for w in backbone.weights]


@pytest.mark.extra_large
def test_sigkill_at_several_points_then_resume(tmp_path):
    reference = str(tmp_path / "reference")
    result = subprocess.run(
        command(reference), env=environment(), capture_output=True, timeout=600
    )
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    output_dir = str(tmp_path / "killed")
    # The third kill lands after a seeded random number of new log rows
    # (an event, not a wall-clock delay, so a loaded machine cannot move it).
    extra_rows = random.Random(0).randint(1, 3)
    kills = [
        writing_a_checkpoint(output_dir),
        lambda: len(rows(output_dir)) >= 6,
        lambda: len(rows(output_dir)) >= min(6 + extra_rows, 9),
    ]
    history = []
    for condition in kills:
        before = completed(output_dir)
        code = run_until(output_dir, condition)
        after = completed(output_dir)
        history.append((code, len(rows(output_dir))))
        # A completed checkpoint is never lost (older ones are pruned only
        # once a newer one is in place).
        if before:
            assert after and after[-1][0] >= before[-1][0]
    assert any(code == -signal.SIGKILL for code, _ in history), history
    final = subprocess.run(
        command(output_dir), env=environment(), capture_output=True, timeout=600
    )
    assert final.returncode == 0, final.stderr.decode()[-2000:]
    got, want = rows(output_dir), rows(reference)
    assert [s for s, _ in got] == [s for s, _ in want] == list(range(1, 11))
    got_weights, want_weights = (
        backbone_weights(output_dir),
        backbone_weights(reference),
    )
    # Four processes against one: no bit-for-bit promise across processes
    # (thread scheduling and kernel choice may differ), so a tolerance. A
    # resume bug (a lost or repeated step, optimizer state not restored)
    # moves the losses by 1e-2 or more; float32 rounding over 10 steps of a
    # tiny model stays near 1e-6.
    np.testing.assert_allclose(
        [loss for _, loss in got],
        [loss for _, loss in want],
        rtol=1e-4,
        atol=1e-6,
    )
    for a, b in zip(got_weights, want_weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    names = os.listdir(os.path.join(output_dir, training.CHECKPOINT_DIR))
    assert not [n for n in names if n.startswith(".tmp_")]
