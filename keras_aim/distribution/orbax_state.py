"""Sharded run checkpoints on JAX with Orbax (`orbax-checkpoint`).

A run sharded over many devices must not gather its weights onto one host
to save them. `ShardedCheckpointManager` is `CheckpointManager` with
Orbax underneath: each device writes its own shards (`StandardCheckpointer`),
and a restore reads them into the *current* variables' shardings, so a run
saved on one mesh resumes on another (2x4 -> 4x2 -> one device). The
folder layout, `state.json` (step, settings fingerprint, variable paths)
and the resume policy are `CheckpointManager`'s: a checkpoint is complete
once its `state.json` exists, damaged ones are set aside, non-finite
weights are never written.

Keras' own `keras.callbacks.OrbaxCheckpoint` saves asynchronously at epoch
or batch frequency but keeps no settings fingerprint or step alignment
with our logging windows, so the run loop uses this manager instead.
"""

import os
import shutil
import time
import uuid
import warnings

import keras

from keras_aim.training import checkpoint_checks
from keras_aim.training.checkpoints import FORMAT_VERSION
from keras_aim.training.checkpoints import STATE_FILE
from keras_aim.training.checkpoints import CheckpointManager
from keras_aim.training.checkpoints import _variable_record
from keras_aim.training.checkpoints import build_optimizer
from keras_aim.training.checkpoints import check_model_matches
from keras_aim.utils import io_utils
from keras_aim.utils.errors import CheckpointDamagedError
from keras_aim.utils.errors import TrainingDivergedError

ORBAX_FOLDER = "orbax_state"


def _ocp():
    try:
        import orbax.checkpoint as ocp
    except ImportError as error:
        raise ImportError(
            "Sharded checkpoints need orbax-checkpoint: `pip install "
            "orbax-checkpoint` (JAX only)."
        ) from error
    return ocp


def _key(index, variable):
    # Orbax keys may not hold "/". The index keeps them unique; the path
    # loses its first part, which for the optimizer's and the seed
    # generator's variables carries a per-process suffix ("adam_w_3").
    path = variable.path.split("/", 1)[-1]
    return f"{index:05d}:{path.replace('/', '|')}"


def _state_tree(model):
    optimizer = build_optimizer(model)
    variables = list(model.variables) + list(optimizer.variables)
    return variables, {_key(i, v): v.value for i, v in enumerate(variables)}


class ShardedCheckpointManager(CheckpointManager):
    """`CheckpointManager` whose weights are written shard by shard by Orbax.

    Args:
        directory: the checkpoints folder.
        max_to_keep: int, how many recent checkpoints to keep.
        read_only: bool, restore only (non-chief processes).
    """

    def save(self, step, model, fingerprint=None, metadata=None, extra=None):
        import jax
        import jax.numpy as jnp

        if self.read_only:
            raise ValueError("This CheckpointManager is read-only.")
        ocp = _ocp()
        variables, tree = _state_tree(model)
        for variable in model.variables:
            value = variable.value
            if jnp.issubdtype(value.dtype, jnp.floating) and not bool(
                jnp.isfinite(value).all()
            ):
                raise TrainingDivergedError(
                    step,
                    float("nan"),
                    self.latest(),
                    what=f"weight {variable.path!r}",
                )
        os.makedirs(self.directory, exist_ok=True)
        final = os.path.join(self.directory, f"step_{step:08d}")
        temporary = os.path.join(
            self.directory, f".tmp_step_{step:08d}_{uuid.uuid4().hex[:8]}"
        )
        os.makedirs(temporary)
        try:
            checkpointer = ocp.StandardCheckpointer()
            checkpointer.save(os.path.join(temporary, ORBAX_FOLDER), tree)
            checkpointer.wait_until_finished()
            sums, sizes = checkpoint_checks.folder_checksums(
                temporary, ORBAX_FOLDER
            )
            optimizer = build_optimizer(model)
            state = {
                "format": FORMAT_VERSION,
                "orbax": True,
                "step": int(step),
                "fingerprint": fingerprint or {},
                "metadata": metadata or {},
                "extra": extra or {},
                "keras_backend": keras.backend.backend(),
                "processes": jax.process_count(),
                "time": time.strftime("%Y-%m-%d %H:%M:%S"),
                "model_variables": _variable_record(model.variables),
                "optimizer_variables": _variable_record(optimizer.variables),
                "sha256": sums,
                "sizes": sizes,
            }
            io_utils.write_json(os.path.join(temporary, STATE_FILE), state)
            io_utils.replace_folder(temporary, final)
        except BaseException:
            shutil.rmtree(temporary, ignore_errors=True)
            raise
        self._prune()
        del variables
        return final

    def verify(self, path):
        """The local checks on an Orbax checkpoint, before any restore.

        `state.json` against its schema, then the SHA-256 of every file
        Orbax wrote (listed in it at save time). Finiteness is checked in
        `restore`, on the arrays Orbax reads into their shardings, before
        anything is assigned.
        """
        state_path = os.path.join(path, STATE_FILE)
        if not self._is_orbax(path):
            if checkpoint_checks.read_state(state_path).get("orbax"):
                raise CheckpointDamagedError(
                    os.path.join(path, ORBAX_FOLDER), "is missing"
                )
            return super().verify(path)
        state = checkpoint_checks.read_state(state_path)
        sums = state.get("sha256")
        if sums is None:
            warnings.warn(
                f"{state_path} lists no checksums (written by an older "
                "keras_aim): only the finiteness of its weights is checked.",
                stacklevel=2,
            )
        elif not any(name.startswith(ORBAX_FOLDER + "/") for name in sums):
            raise CheckpointDamagedError(state_path, "lists no Orbax files")
        else:
            checkpoint_checks.check_checksums(path, sums, state.get("sizes"))
        return state

    @staticmethod
    def _is_orbax(path):
        return os.path.isdir(os.path.join(path, ORBAX_FOLDER))

    def restore(self, model, path=None, fingerprint=None):
        """Restores into the current variables' shardings (any mesh)."""
        import jax
        import jax.numpy as jnp

        path = path or self.latest()
        if path is None:
            raise ValueError(f"No checkpoint in {self.directory!r}.")
        if not self._is_orbax(path):
            return super().restore(model, path, fingerprint)
        state = self.verify(path)
        if fingerprint is not None:
            from keras_aim.training.checkpoints import check_fingerprint

            check_fingerprint(state.get("fingerprint", {}), fingerprint, path)
        check_model_matches(state, model, path)
        ocp = _ocp()
        variables, tree = _state_tree(model)
        target = {
            key: jax.ShapeDtypeStruct(
                value.shape, value.dtype, sharding=value.sharding
            )
            for key, value in tree.items()
        }
        try:
            restored = ocp.StandardCheckpointer().restore(
                os.path.join(path, ORBAX_FOLDER), target
            )
        except Exception as error:  # Orbax raises many error types.
            raise CheckpointDamagedError(
                os.path.join(path, ORBAX_FOLDER),
                f"cannot be restored ({type(error).__name__}: {error})",
            ) from error
        for index, variable in enumerate(variables):
            value = restored[_key(index, variable)]
            if jnp.issubdtype(value.dtype, jnp.floating) and not bool(
                jnp.isfinite(value).all()
            ):
                raise CheckpointDamagedError(
                    os.path.join(path, ORBAX_FOLDER),
                    f"holds non-finite values (in {variable.path!r})",
                )
        for index, variable in enumerate(variables):
            variable.assign(restored[_key(index, variable)])
        state.setdefault("extra", {})
        return state
