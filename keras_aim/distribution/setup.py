"""One object that says how a training run is spread over devices.

`RunDistribution(kind, mesh)` picks the engine for the backend:

- `"none"`: one device on every backend;
- `"data"`: `keras.distribution.DataParallel` (jax), `torch_ddp` under
  torchrun (torch), `tf.distribute.MirroredStrategy` (tensorflow);
- `"model"`: `keras.distribution.ModelParallel` with the AIM layout map
  (jax only: Keras 3.15 has no model parallelism for the others).

It gives the scope to build models in, the slice of every global batch
this process reads, whether this process writes the run's files (the
chief), and `prepare(model)` for what the engine needs after `compile`.
Multi-host JAX runs call `keras.distribution.initialize()` first when
`KERAS_DISTRIBUTION_JOB_ADDRESSES` (or the TPU environment) says so.
"""

import contextlib
import os

import keras

from keras_aim.distribution import layout

KINDS = ("none", "data", "model")


class RunDistribution:
    """How one run is distributed (see the module docstring).

    Args:
        kind: `"none"`, `"data"` or `"model"`.
        mesh: `"BATCHxMODEL"` for `"model"` (e.g. `"2x4"`); for `"data"`
            on TensorFlow, `"Nx1"` makes N logical CPU replicas when there
            is no GPU. Defaults to every device on the batch axis.
        global_batch_size: int, checked against the batch axis.
    """

    def __init__(self, kind="none", mesh=None, global_batch_size=None):
        if kind not in KINDS:
            raise ValueError(
                f"--distribution must be one of {KINDS}; got {kind!r}."
            )
        self.kind = kind
        self.backend = keras.backend.backend()
        self.num_shards, self.shard_index = 1, 0
        self._engine = None
        self._mesh = None
        if kind == "none":
            return
        if self.backend == "jax":
            self._jax(kind, mesh)
        elif self.backend == "torch":
            if kind == "model":
                raise ValueError(
                    "--distribution=model needs the jax backend: Keras 3.15 "
                    "has no model parallelism for torch. Use "
                    "--distribution=data (torchrun)."
                )
            from keras_aim.distribution import torch_ddp

            self.shard_index, self.num_shards = torch_ddp.initialize()
        else:
            if kind == "model":
                raise ValueError(
                    "--distribution=model needs the jax backend; TensorFlow "
                    "runs data parallel with --distribution=data."
                )
            from keras_aim.distribution import tf_mirrored

            replicas = None
            if mesh:
                replicas = int(str(mesh).lower().split("x")[0])
            self._engine = tf_mirrored.mirrored_strategy(replicas)
        self.num_replicas = self._replicas()
        if global_batch_size is not None and global_batch_size % max(
            self.num_replicas, 1
        ):
            raise ValueError(
                f"The global batch size {global_batch_size} must divide by "
                f"the {self.num_replicas} data-parallel replicas."
            )

    def _jax(self, kind, mesh):
        if os.environ.get("KERAS_DISTRIBUTION_JOB_ADDRESSES"):
            keras.distribution.initialize()
        devices = keras.distribution.list_devices()
        if kind == "data":
            self._engine = keras.distribution.DataParallel(devices=devices)
            return
        self._mesh = layout.parse_mesh(mesh or f"1x{len(devices)}", devices)
        self._engine = keras.distribution.ModelParallel(
            layout_map=layout.get_layout_map(self._mesh),
            batch_dim_name="batch",
        )

    def _replicas(self):
        if self.backend == "jax":
            if self._mesh is not None:
                return dict(zip(self._mesh.axis_names, self._mesh.shape))[
                    "batch"
                ]
            return len(keras.distribution.list_devices())
        if self.backend == "torch":
            return self.num_shards
        return self._engine.num_replicas_in_sync

    @property
    def chief(self):
        """Whether this process writes logs, checkpoints and reports."""
        if self.backend == "jax" and self.kind != "none":
            import jax

            return jax.process_index() == 0
        return self.shard_index == 0

    def scope(self):
        """The context to build and compile the models in."""
        if self._engine is None:
            return contextlib.nullcontext()
        return self._engine.scope()

    def check_config(self, hidden_dim, num_heads, head_hidden_dim=None):
        """Refuses a mesh the model's widths cannot be sharded on."""
        if self._mesh is not None:
            layout.check_dimensions(
                self._mesh,
                hidden_dim,
                num_heads,
                head_hidden_dim=head_hidden_dim,
            )

    def prepare(self, model):
        """After `compile`: check layouts, wire gradients and replicas."""
        if self.kind == "none":
            return model
        if self.backend == "jax":
            if self._mesh is not None:
                layout.check_layout(model, self._mesh)
            return model
        if self.backend == "torch":
            from keras_aim.distribution import torch_ddp

            return torch_ddp.data_parallel(model)
        from keras_aim.distribution import tf_mirrored

        return tf_mirrored.data_parallel(model)

    def checkpoint_manager(self):
        """The checkpoint manager class: Orbax shards for distributed jax."""
        if self.backend == "jax" and self.kind != "none":
            from keras_aim.distribution.orbax_state import (
                ShardedCheckpointManager,
            )

            return ShardedCheckpointManager
        from keras_aim.training.checkpoints import CheckpointManager

        return CheckpointManager

    def describe(self):
        if self.kind == "none":
            return "one device"
        mesh = f", mesh {self._mesh.shape}" if self._mesh is not None else ""
        return (
            f"{self.kind} parallel on {self.backend}, {self.num_replicas} "
            f"replicas{mesh}"
        )
