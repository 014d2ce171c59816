"""Data parallelism on the TensorFlow backend with `tf.distribute`.

Keras' TensorFlow trainer runs `fit` under a `tf.distribute` strategy
whose scope the model was built in; `tf.distribute.MirroredStrategy`
mirrors the variables over local devices and splits each global batch.
This module adds what AIM's objective needs (a `ReplicaContext`, so that
prefix lengths and the pooled loss are those of the global batch) and a
helper to make logical CPU devices for tests and CPU machines.

    strategy = tf_mirrored.mirrored_strategy(2)     # before TF runs ops
    with strategy.scope():
        pretrainer = AIMPretrainer(...); pretrainer.compile(...)
    tf_mirrored.data_parallel(pretrainer)
    pretrainer.fit(global_batches, ...)

Limits: one host (`MultiWorkerMirroredStrategy` is untested here); Keras'
own `keras.distribution` does not support TensorFlow.
"""

from keras_aim.distribution.replicas import ReplicaContext


def _tf():
    import tensorflow as tf

    return tf


def mirrored_strategy(num_devices=None):
    """A `MirroredStrategy` over GPUs, or over `num_devices` logical CPUs.

    Logical CPU devices can only be made before TensorFlow first runs an
    op in the process.
    """
    tf = _tf()
    gpus = tf.config.list_physical_devices("GPU")
    if gpus and num_devices is None:
        return tf.distribute.MirroredStrategy()
    num_devices = num_devices or 1
    cpu = tf.config.list_physical_devices("CPU")[0]
    if len(tf.config.list_logical_devices("CPU")) < num_devices:
        try:
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices
            )
        except RuntimeError as error:
            raise ValueError(
                f"Cannot make {num_devices} logical CPU devices: TensorFlow "
                f"already started ({error}). Create the strategy first."
            ) from error
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices[:num_devices])


class TFReplicaContext(ReplicaContext):
    """The `tf.distribute` replica a step runs on (one outside a strategy)."""

    @property
    def num_replicas(self):
        return _tf().distribute.get_replica_context().num_replicas_in_sync

    @property
    def value_scale(self):
        # Keras' TensorFlow trainer multiplies the reported loss by the
        # replica count (it expects per-replica means); undo that here.
        return 1.0 / self.num_replicas

    def index(self):
        return _tf().distribute.get_replica_context().replica_id_in_sync_group

    def sum(self, x):
        context = _tf().distribute.get_replica_context()
        return context.all_reduce("sum", x)


def data_parallel(model):
    """Gives a pretrainer built in a strategy scope its replica context."""
    if hasattr(model, "replica_context"):
        model.replica_context = TFReplicaContext()
    return model
