"""Run checkpoints: atomic, verified and resumable.

A checkpoint is a folder `step_{step:08d}` holding

- `model.weights.h5`: Keras' own weights file (`model.save_weights`):
  every model variable by layer path, the optimizer's variables (moments,
  iteration counter) and the pretrainer's prefix-length generator state.
  `model.load_weights` reads it back, with or without keras_aim;
- `state.json`, written last: the step, the run's settings fingerprint,
  the variable paths, shapes and dtypes, the loss-tracker state of a
  logging window cut short by a stop, and the SHA-256 of every file.

Keras' `BackupAndRestore` resumes at epoch granularity and rewrites its
backup in place; this module writes each checkpoint beside its final name
and renames it into place, verifies checksums before using one, and never
writes weights that are not finite.
"""

import json
import os
import shutil
import time
import uuid
import warnings

import keras
import numpy as np

from keras_aim.training import checkpoint_checks
from keras_aim.training.checkpoint_checks import FORMAT_VERSION
from keras_aim.training.checkpoint_checks import sha256_file as _sha256
from keras_aim.utils import io_utils
from keras_aim.utils.errors import CheckpointDamagedError
from keras_aim.utils.errors import SettingsError
from keras_aim.utils.errors import TrainingDivergedError

CHECKPOINT_PREFIX = "step_"
DAMAGED_PREFIX = "damaged_"
STATE_FILE = "state.json"
WEIGHTS_FILE = "model.weights.h5"
# The format of keras_aim 0.1 (variables by index); still resumable.
LEGACY_MODEL_FILE = "model_variables.npz"
LEGACY_OPTIMIZER_FILE = "optimizer_variables.npz"


def build_optimizer(model):
    """Creates the optimizer variables of a compiled, built model."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None:
        raise ValueError("Compile the model with an optimizer first.")
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    return optimizer


def _variable_record(variables):
    return [
        {"path": v.path, "shape": list(v.shape), "dtype": str(v.dtype)}
        for v in variables
    ]


def _signature(record):
    # The leading component (optimizer or seed-generator name) may carry a
    # uniquifying suffix such as "_1" in another process; the rest may not.
    return record["path"].split("/", 1)[-1], tuple(record["shape"])


def check_finite_weights(model, step, latest):
    """Raises `TrainingDivergedError` naming the first non-finite weight."""
    for variable in model.variables:
        array = np.asarray(keras.ops.convert_to_numpy(variable.value))
        if (
            array.dtype.kind not in "biu"
            and not np.isfinite(array.astype("float32", copy=False)).all()
        ):
            raise TrainingDivergedError(
                step, float("nan"), latest, what=f"weight {variable.path!r}"
            )


class CheckpointManager:
    """Atomic, resumable training checkpoints in one folder.

    Older checkpoints beyond `max_to_keep` are deleted only after the new
    one is in place; folders without a `state.json` (a write cut short)
    are never taken for checkpoints.

    Args:
        directory: the checkpoints folder (created on the first save).
        max_to_keep: int, how many recent checkpoints to keep. Defaults
            to 2.

    Example:

    ```python
    manager = CheckpointManager("/tmp/example_run/checkpoints")
    manager.save(100, model, fingerprint={"seed": 0})
    state = manager.restore(model, fingerprint={"seed": 0})
    state["step"]  # 100
    ```
    """

    def __init__(self, directory, max_to_keep=2, read_only=False):
        if (
            isinstance(max_to_keep, bool)
            or not isinstance(max_to_keep, int)
            or max_to_keep < 1
        ):
            raise ValueError(
                f"`max_to_keep` must be a positive int; got {max_to_keep!r}."
            )
        self.directory = os.path.abspath(os.fspath(directory))
        self.max_to_keep = max_to_keep
        self.read_only = bool(read_only)

    def checkpoints(self):
        """`[(step, path)]` of the complete checkpoints, oldest first."""
        if not os.path.isdir(self.directory):
            return []
        found = []
        for name in os.listdir(self.directory):
            suffix = name[len(CHECKPOINT_PREFIX) :]
            path = os.path.join(self.directory, name)
            if (
                name.startswith(CHECKPOINT_PREFIX)
                and suffix.isdigit()
                and os.path.isfile(os.path.join(path, STATE_FILE))
            ):
                found.append((int(suffix), path))
        return sorted(found)

    def latest(self):
        """The path of the newest complete checkpoint, or `None`."""
        found = self.checkpoints()
        return found[-1][1] if found else None

    def save(self, step, model, fingerprint=None, metadata=None, extra=None):
        """Writes a checkpoint of `model` (and its optimizer) at `step`.

        Args:
            step: int, the number of completed optimizer steps.
            model: a compiled Keras model.
            fingerprint: JSON-able dict that a resumed run must match.
            metadata: JSON-able dict stored as is.
            extra: JSON-able dict of run state (e.g. a partial window's
                loss-tracker values), returned by `restore`.

        Returns:
            The checkpoint folder.

        Raises:
            TrainingDivergedError: a model variable is NaN or infinite;
                nothing is written.
        """
        if self.read_only:
            raise ValueError("This CheckpointManager is read-only.")
        optimizer = build_optimizer(model)
        check_finite_weights(model, step, self.latest())
        os.makedirs(self.directory, exist_ok=True)
        final = os.path.join(self.directory, f"{CHECKPOINT_PREFIX}{step:08d}")
        temporary = os.path.join(
            self.directory,
            f".tmp_{CHECKPOINT_PREFIX}{step:08d}_{uuid.uuid4().hex[:8]}",
        )
        os.makedirs(temporary)
        try:
            weights = os.path.join(temporary, WEIGHTS_FILE)
            model.save_weights(weights)
            state = {
                "format": FORMAT_VERSION,
                "step": int(step),
                "fingerprint": fingerprint or {},
                "metadata": metadata or {},
                "extra": extra or {},
                "keras_backend": keras.backend.backend(),
                "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                "model_variables": _variable_record(model.variables),
                "optimizer_variables": _variable_record(optimizer.variables),
                "sha256": {WEIGHTS_FILE: _sha256(weights)},
                "sizes": {WEIGHTS_FILE: os.path.getsize(weights)},
            }
            # Written last: a folder without state.json is never a checkpoint.
            io_utils.write_json(os.path.join(temporary, STATE_FILE), state)
            io_utils.replace_folder(temporary, final)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        self._prune()
        return final

    def _prune(self):
        for _, path in self.checkpoints()[: -self.max_to_keep]:
            shutil.rmtree(path, ignore_errors=True)
        for name in os.listdir(self.directory):
            if name.startswith(".tmp_") or ".old-" in name:
                shutil.rmtree(
                    os.path.join(self.directory, name), ignore_errors=True
                )

    def verify(self, path):
        """Reads `state.json` and checks every file of a checkpoint.

        The checksums written with it must match and every stored weight
        must be finite; nothing is assigned to a model.

        Returns:
            The state dict.

        Raises:
            CheckpointDamagedError: naming the damaged file.
        """
        state_path = os.path.join(path, STATE_FILE)
        state = checkpoint_checks.read_state(state_path)
        if state["format"] < FORMAT_VERSION:
            for name in (LEGACY_MODEL_FILE, LEGACY_OPTIMIZER_FILE):
                checkpoint_checks.check_npz_file(os.path.join(path, name))
            return state
        sums = state.get("sha256") or {}
        if WEIGHTS_FILE not in sums:
            raise CheckpointDamagedError(state_path, "lists no checksums")
        # Older checkpoints record no sizes: a weights file is its
        # variables plus HDF5 overhead, never many times more.
        limit = 2 * checkpoint_checks.recorded_bytes(state) + (1 << 20)
        limit += 64 * 1024 * len(state["model_variables"])
        limit += 64 * 1024 * len(state["optimizer_variables"])
        checkpoint_checks.check_checksums(path, sums, state.get("sizes"), limit)
        checkpoint_checks.check_h5_file(os.path.join(path, WEIGHTS_FILE))
        return state

    def restore(self, model, path=None, fingerprint=None):
        """Verifies a checkpoint, then loads it into `model` and its optimizer.

        Args:
            model: the compiled, built model the checkpoint was saved from
                (same architecture).
            path: a checkpoint folder; defaults to the latest.
            fingerprint: dict the saved fingerprint must equal; differing
                keys are named in the error.

        Returns:
            The checkpoint's state dict (`step`, `fingerprint`, `metadata`,
            `extra`, ...).

        Raises:
            CheckpointDamagedError: the checkpoint is damaged (nothing was
                assigned to the model).
            SettingsError: it was written with other settings or another
                model.
        """
        path = path or self.latest()
        if path is None:
            raise ValueError(f"No checkpoint in {self.directory!r}.")
        state = self.verify(path)
        if fingerprint is not None:
            check_fingerprint(state.get("fingerprint", {}), fingerprint, path)
        optimizer = check_model_matches(state, model, path)
        if state.get("format", 1) < FORMAT_VERSION:
            _restore_legacy(path, model, optimizer)
        else:
            model.load_weights(os.path.join(path, WEIGHTS_FILE))
        state.setdefault("extra", {})
        return state

    def restore_latest_valid(self, model, fingerprint=None):
        """Restores the newest checkpoint that verifies; `None` if none does.

        A damaged checkpoint (a truncated or altered file, a broken
        `state.json`, non-finite weights) is moved to `damaged_step_...`
        with a warning that names the damaged file, and the next older one
        is tried. Settings that differ are an error, not damage.
        """
        for _, path in reversed(self.checkpoints()):
            try:
                return self.restore(model, path, fingerprint)
            except CheckpointDamagedError as error:
                if self.read_only:
                    warnings.warn(
                        f"Skipping a damaged checkpoint: {error}", stacklevel=2
                    )
                    continue
                aside = os.path.join(
                    self.directory, DAMAGED_PREFIX + os.path.basename(path)
                )
                shutil.rmtree(aside, ignore_errors=True)
                os.rename(path, aside)
                warnings.warn(
                    f"Skipping a damaged checkpoint: {error} It was moved to "
                    f"{aside}; trying the previous checkpoint.",
                    stacklevel=2,
                )
        return None


def check_model_matches(state, model, path):
    """Raises a `SettingsError` if the saved variables are not the model's.

    Returns:
        The model's (built) optimizer.
    """
    optimizer = build_optimizer(model)
    for variables, key in (
        (model.variables, "model_variables"),
        (optimizer.variables, "optimizer_variables"),
    ):
        saved = state[key]
        current = _variable_record(variables)
        if [_signature(s) for s in saved] != [_signature(c) for c in current]:
            raise SettingsError(
                f"Checkpoint {path!r} does not match this model: its "
                f"{key} ({len(saved)}) differ from the model's "
                f"({len(current)}) in paths or shapes. Resume with the "
                "same model settings, or use a new output folder."
            )
    return optimizer


def _restore_legacy(path, model, optimizer):
    """Reads a keras_aim 0.1 checkpoint (variables keyed by index).

    Its `state.json` lists the variables in the same order with their
    paths, already checked against this model by `restore`.
    """
    for variables, name in (
        (model.variables, LEGACY_MODEL_FILE),
        (optimizer.variables, LEGACY_OPTIMIZER_FILE),
    ):
        with np.load(os.path.join(path, name)) as arrays:
            for i, variable in enumerate(variables):
                variable.assign(arrays[f"v{i:05d}"])


def check_fingerprint(saved, current, path="the checkpoint"):
    """Raises a `SettingsError` listing the settings that differ."""
    saved = json.loads(json.dumps(saved))
    current = json.loads(json.dumps(current))
    keys = sorted(set(saved) | set(current))
    differ = [k for k in keys if saved.get(k) != current.get(k)]
    if differ:
        changes = ", ".join(
            f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in differ
        )
        raise SettingsError(
            f"Cannot resume from {path}: it was written with different "
            f"settings ({changes}). Rerun with the original settings, or "
            "start over with --noresume or a new --output_dir."
        )
