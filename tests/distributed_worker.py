"""Worker for tests/test_distribution.py: one distributed check per call.

Run as `python tests/distributed_worker.py CHECK OUTPUT_JSON` with the
environment the check needs (8 forced host devices for jax, torchrun for
torch, logical devices for tensorflow); writes its results as JSON.
"""

import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

if sys.argv[1:2] == ["tensorflow"]:
    # Logical devices must exist before Keras (which starts TensorFlow).
    import tensorflow as tf

    tf.config.set_logical_device_configuration(
        tf.config.list_physical_devices("CPU")[0],
        [tf.config.LogicalDeviceConfiguration()] * 2,
    )

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_aim  # noqa: E402

ARCH = dict(
    image_shape=(16, 16, 3),
    patch_size=4,
    hidden_dim=32,
    num_layers=2,
    num_heads=4,
)
STEPS = 3
GLOBAL_BATCH = 8


def images(count=GLOBAL_BATCH * STEPS, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(count, 16, 16, 3)).astype("float32")


def pretrainer(seed=0, clip=1.0):
    keras.utils.set_random_seed(seed)
    model = keras_aim.AIMPretrainer(
        keras_aim.AIMBackbone(**ARCH),
        head_hidden_dim=32,
        head_num_layers=1,
        seed=seed,
    )
    model.compile(
        optimizer=keras_aim.optimizers.pretraining_optimizer(
            STEPS,
            GLOBAL_BATCH,
            base_batch_size=GLOBAL_BATCH,
            global_clipnorm=clip,
        )
    )
    return model


def weights(model):
    return [np.asarray(keras.ops.convert_to_numpy(w)) for w in model.weights]


def step_losses(model, x, batch):
    losses = []
    for i in range(STEPS):
        logs = model.train_on_batch(x[i * batch : (i + 1) * batch])
        losses.append(float(np.asarray(logs)))
    return losses


def jax_sharding(output):
    import jax

    from keras_aim.distribution import layout

    result = {"devices": len(jax.devices())}
    x = images()
    reference = pretrainer()
    initial = weights(reference)
    ref_predictions = keras.ops.convert_to_numpy(
        reference.predict_next_patches(x[:4], [1, 2, 3, 5])
    )
    ref_losses = step_losses(reference, x, GLOBAL_BATCH)
    ref_final = weights(reference)

    devices = keras.distribution.list_devices()
    mesh = keras.distribution.DeviceMesh((2, 4), ("batch", "model"), devices)
    distribution = keras.distribution.ModelParallel(
        layout_map=keras_aim.AIMPretrainer.get_layout_map(mesh),
        batch_dim_name="batch",
    )
    with distribution.scope():
        sharded = pretrainer()
    found = layout.check_layout(sharded, mesh)
    result["sharded_paths"] = found["sharded"]
    specs = {}
    for w in sharded.weights:
        specs[w.path] = [
            None if a is None else str(a) for a in w.value.sharding.spec
        ]
    result["specs"] = specs
    for w, value in zip(sharded.weights, initial):
        w.assign(value)
    got = keras.ops.convert_to_numpy(
        sharded.predict_next_patches(x[:4], [1, 2, 3, 5])
    )
    result["forward_error"] = float(np.abs(got - ref_predictions).max())
    with distribution.scope():
        result["losses"] = step_losses(sharded, x, GLOBAL_BATCH)
    result["ref_losses"] = ref_losses
    result["weight_error"] = max(
        float(np.abs(a - b).max()) for a, b in zip(weights(sharded), ref_final)
    )

    # Data parallel over all 8 devices, through fit.
    data_parallel = keras.distribution.DataParallel(devices=devices)
    with data_parallel.scope():
        replicated = pretrainer()
        result["dp_losses"] = step_losses(replicated, x, GLOBAL_BATCH)

    # A preset loaded inside the scope lands sharded, with its values.
    folder = os.path.join(os.path.dirname(output), "preset")
    reference.backbone.save_to_preset(folder)
    with distribution.scope():
        loaded = keras_aim.AIMBackbone.from_preset(folder)
    qkv = loaded.get_layer("block_0").attn_qkv.kernel
    result["loaded_spec"] = [str(a) for a in qkv.value.sharding.spec]
    result["loaded_error"] = max(
        float(np.abs(a - b).max())
        for a, b in zip(weights(loaded), weights(reference.backbone))
    )
    # Orbax: written shard by shard on the 2x4 mesh, restored onto a 4x2
    # mesh and onto one device.
    from keras_aim.distribution.orbax_state import ShardedCheckpointManager

    folder = os.path.join(os.path.dirname(output), "orbax")
    with distribution.scope():
        ShardedCheckpointManager(folder).save(STEPS, sharded, {"a": 1})
    expected = weights(sharded)
    other = keras.distribution.DeviceMesh((4, 2), ("batch", "model"), devices)
    other_distribution = keras.distribution.ModelParallel(
        layout_map=keras_aim.AIMPretrainer.get_layout_map(other),
        batch_dim_name="batch",
    )
    errors = {}
    for name, scope in (("4x2", other_distribution), ("one", None)):
        if scope is None:
            target = pretrainer(seed=9)
        else:
            with scope.scope():
                target = pretrainer(seed=9)
        state = ShardedCheckpointManager(folder).restore(
            target, fingerprint={"a": 1}
        )
        errors[name] = max(
            float(np.abs(a - b).max())
            for a, b in zip(weights(target), expected)
        )
        errors[name + "_step"] = state["step"]
        if scope is not None:
            qkv = target.backbone.get_layer("block_0").attn_qkv.kernel
            errors["restored_spec"] = [str(a) for a in qkv.value.sharding.spec]
            errors["restored_shape"] = list(
                qkv.value.sharding.shard_shape(qkv.value.shape)
            )
    result["orbax"] = errors
    with open(output, "w") as f:
        json.dump(result, f)


def torch_ddp(output):
    from keras_aim.distribution import torch_ddp as ddp

    rank, world = ddp.initialize()
    x = images()
    model = pretrainer(seed=rank)  # different seeds: the broadcast aligns
    if world > 1:
        ddp.data_parallel(model)
    per_rank = GLOBAL_BATCH // world
    losses = []
    for i in range(STEPS):
        batch = x[i * GLOBAL_BATCH : (i + 1) * GLOBAL_BATCH]
        logs = model.train_on_batch(
            batch[rank * per_rank : (rank + 1) * per_rank]
        )
        losses.append(float(np.asarray(logs)))
    result = {
        "rank": rank,
        "world": world,
        "losses": losses,
        "weights": [w.tolist() for w in weights(model)[:4]],
        "checksum": float(sum(np.abs(w).sum() for w in weights(model))),
    }
    with open(f"{output}.{rank}", "w") as f:
        json.dump(result, f)


def tf_mirrored(output):
    import tensorflow as tf

    from keras_aim.distribution import tf_mirrored as mirrored

    # `*_on_batch` hands every replica the whole batch (Keras runs the step
    # with plain tensors); `fit` on a dataset splits each global batch.
    strategy = mirrored.mirrored_strategy(2)
    x = images()

    class Steps(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.losses = []

        def on_train_batch_end(self, batch, logs=None):
            self.losses.append(float(logs["loss"]))  # the running mean

    def run(model):
        steps = Steps()
        data = tf.data.Dataset.from_tensor_slices(x).batch(GLOBAL_BATCH)
        model.fit(data, epochs=1, verbose=0, callbacks=[steps])
        return steps.losses

    # Keras' TensorFlow optimizer clips each replica's gradient before the
    # replicas are summed, so clipping is left out of the exact comparison.
    reference = pretrainer(clip=None)
    initial = weights(reference)
    ref_losses = run(reference)
    with strategy.scope():
        model = pretrainer(clip=None)
    mirrored.data_parallel(model)
    for w, value in zip(model.weights, initial):
        w.assign(value)
    losses = run(model)
    result = {
        "replicas": strategy.num_replicas_in_sync,
        "ref_losses": ref_losses,
        "losses": losses,
        "weight_error": max(
            float(np.abs(a - b).max())
            for a, b in zip(weights(model), weights(reference))
        ),
    }
    with open(output, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    {"jax": jax_sharding, "torch": torch_ddp, "tensorflow": tf_mirrored}[
        sys.argv[1]
    ](sys.argv[2])
