"""Scaling out: layout maps, and sharded or data-parallel training that
matches one device.

The layout checks run on every backend. The engine checks run in a
subprocess with the devices they need, each in its backend's session:
jax on 8 forced host devices (a 2x4 batch x model mesh), torch in two
gloo processes under torchrun, tensorflow on two logical CPU devices.
"""

import contextlib
import json
import os
import shutil
import subprocess
import sys
import types

import keras
import numpy as np
import pytest
from conftest import stderr_report

import keras_aim
from keras_aim.distribution import layout

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER = os.path.join(ROOT, "tests", "distributed_worker.py")
BACKEND = keras.backend.backend()
TINY = dict(
    image_shape=(16, 16, 3),
    patch_size=4,
    hidden_dim=32,
    num_layers=2,
    num_heads=4,
)


def mesh(batch, model):
    return types.SimpleNamespace(
        shape=(batch, model), axis_names=("batch", "model")
    )


def all_models():
    backbone = keras_aim.AIMBackbone(**TINY)
    lora = keras_aim.AIMBackbone(**TINY)
    lora.enable_lora(2)
    return {
        "backbone": backbone,
        "pretrainer": keras_aim.AIMPretrainer(
            keras_aim.AIMBackbone(**TINY),
            head_hidden_dim=32,
            head_num_layers=2,
        ),
        "classifier": keras_aim.AIMImageClassifier(
            keras_aim.AIMBackbone(**TINY), num_classes=8
        ),
        "linear": keras_aim.AIMImageClassifier(
            keras_aim.AIMBackbone(**TINY), num_classes=8, probe="linear"
        ),
        "lora": keras_aim.AIMImageClassifier(lora, num_classes=8),
    }


def test_every_variable_matches_exactly_one_rule():
    for name, model in all_models().items():
        found = layout.check_layout(model, mesh(2, 4))
        assert found["sharded"], name
        large = [
            v.path
            for v in model.weights
            if len(v.shape) == 2 and min(v.shape) >= 32 and "lora" not in v.path
        ]
        assert sorted(large) == sorted(
            p for p in found["sharded"] if p in large
        ), name
        assert len(found["sharded"]) + len(found["replicated"]) == len(
            model.variables
        )


def test_a_renamed_layer_makes_the_check_fail():
    backbone = keras_aim.AIMBackbone(**TINY)
    pooled = keras.layers.GlobalAveragePooling1D()(backbone.output)
    outputs = keras.layers.Dense(8, name="my_head")(pooled)
    model = keras.Model(backbone.input, outputs)
    with pytest.raises(ValueError, match="my_head/kernel"):
        layout.check_layout(model, mesh(1, 2))


@pytest.mark.parametrize(
    "name,model_axis",
    [("aim_600m", 4), ("aim_1b", 8), ("aim_3b", 8), ("aim_7b", 8)],
)
def test_released_presets_leave_no_large_kernel_replicated(name, model_axis):
    arch = keras_aim.PRESETS[name]["backbone"]
    # The paths depend only on the depth: a narrow twin has them all.
    twin = keras_aim.AIMBackbone(
        image_shape=(28, 28, 3),
        patch_size=14,
        hidden_dim=16,
        num_layers=arch["num_layers"],
        num_heads=4,
    )
    found = layout.check_layout(twin, mesh(1, 4))
    for i in range(arch["num_layers"]):
        for part in ("attn_qkv", "attn_proj", "mlp_fc1", "mlp_fc2"):
            assert f"block_{i}/{part}/kernel" in found["sharded"]
    for batch in (1, model_axis // 4 or 1, 256 // model_axis):
        layout.check_dimensions(
            mesh(batch, model_axis),
            arch["hidden_dim"],
            arch["num_heads"],
            head_hidden_dim=2048,
        )


@pytest.mark.parametrize(
    "axes,width,heads,match",
    [
        ((1, 5), 42, 5, "the width"),
        ((1, 8), 64, 12, "attention heads"),
        ((3, 2), 64, 4, "'batch' axis"),
    ],
)
def test_meshes_that_do_not_divide_are_refused(axes, width, heads, match):
    with pytest.raises(ValueError, match=match):
        layout.check_dimensions(mesh(*axes), width, heads)


def test_unknown_axis_names_are_refused():
    fake = mesh(1, 1)
    with pytest.raises(ValueError, match="'tensor' is not an axis"):
        layout.check_dimensions(fake, 32, 4, model_parallel_dim_name="tensor")
    if BACKEND == "jax":
        real = keras.distribution.DeviceMesh(
            (1,), ("data",), keras.distribution.list_devices()[:1]
        )
        with pytest.raises(ValueError, match="not an axis"):
            keras_aim.AIMBackbone.get_layout_map(real)
    with pytest.raises(ValueError, match="BATCHxMODEL"):
        layout.parse_mesh("2by4")


def run_worker(check, tmp_path, env, command=None):
    output = str(tmp_path / "result.json")
    environment = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    environment.update(env)
    command = command or [sys.executable]
    result = subprocess.run(
        [*command, WORKER, check, output],
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, stderr_report(result.stderr)
    return output


@pytest.mark.large(backend="jax")
@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution is jax-only")
def test_jax_2x4_mesh_shards_and_matches_one_device(tmp_path):
    output = run_worker(
        "jax",
        tmp_path,
        {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"},
    )
    with open(output) as f:
        result = json.load(f)
    assert result["devices"] == 8
    specs = result["specs"]
    assert specs["block_0/attn_qkv/kernel"] == ["batch", "model"]
    assert specs["block_1/mlp_fc2/kernel"] == ["model", "batch"]
    assert specs["pixel_head/block_0_fc1/kernel"] == ["batch", "model"]
    assert specs["block_0/norm_1/gamma"] == []
    assert result["forward_error"] < 1e-5
    np.testing.assert_allclose(
        result["losses"], result["ref_losses"], rtol=1e-5
    )
    np.testing.assert_allclose(
        result["dp_losses"], result["ref_losses"], rtol=1e-5
    )
    assert result["weight_error"] < 1e-5
    assert result["loaded_spec"] == ["batch", "model"]
    assert result["loaded_error"] == 0.0
    orbax = result["orbax"]
    assert orbax["4x2"] == 0.0 and orbax["one"] == 0.0
    assert orbax["4x2_step"] == orbax["one_step"] == 3
    assert orbax["restored_spec"] == ["batch", "model"]
    assert orbax["restored_shape"] == [32 // 4, 96 // 2]


@pytest.mark.large(backend="torch")
@pytest.mark.skipif(BACKEND != "torch", reason="torch.distributed check")
def test_torch_two_processes_match_one_process(tmp_path):
    torchrun = shutil.which("torchrun") or os.path.join(
        os.path.dirname(sys.executable), "torchrun"
    )
    # --standalone: torchrun picks a free port (a fixed one collides with
    # any other run on the machine).
    command = [torchrun, "--standalone", "--nproc_per_node=2"]
    two = run_worker("torch", tmp_path, {"OMP_NUM_THREADS": "1"}, command)
    one = (
        run_worker("torch", tmp_path / "one", {"WORLD_SIZE": "1"})
        if ((tmp_path / "one").mkdir() is None)
        else None
    )
    ranks = []
    for rank in (0, 1):
        with open(f"{two}.{rank}") as f:
            ranks.append(json.load(f))
    with open(f"{one}.0") as f:
        single = json.load(f)
    assert ranks[0]["world"] == 2
    # Exact across the two ranks, by construction: DDP applies the same
    # all-reduced gradient to the same broadcast weights on both, and the
    # reported loss is the all-reduced value itself (replicas.pooled_loss);
    # with two ranks the sum is a + b on one and b + a on the other, which
    # IEEE addition makes bit-identical.
    assert ranks[0]["weights"] == ranks[1]["weights"]
    assert ranks[0]["losses"] == ranks[1]["losses"]
    # Against one process on the whole batch: the same sums split in two
    # and added in another order, so float32 rounding differs. A step's loss
    # is a mean over a few thousand values (eps 1.2e-7 each, growing like
    # sqrt(n)), and AdamW over 3 steps carries it into the weights.
    np.testing.assert_allclose(ranks[0]["losses"], single["losses"], rtol=1e-5)
    for a, b in zip(ranks[0]["weights"], single["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


@pytest.mark.large(backend="tensorflow")
@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.distribute check")
def test_tensorflow_mirrored_strategy_matches_one_device(tmp_path):
    output = run_worker("tensorflow", tmp_path, {})
    with open(output) as f:
        result = json.load(f)
    assert result["replicas"] == 2
    np.testing.assert_allclose(
        result["losses"], result["ref_losses"], rtol=1e-4
    )
    assert result["weight_error"] < 1e-4


PRETRAIN = os.path.join(ROOT, "examples", "pretrain.py")
TINY_RUN = [
    "--steps=4",
    "--batch_size=8",
    "--hidden_dim=32",
    "--num_layers=1",
    "--num_heads=4",
    "--head_hidden_dim=32",
    "--head_num_layers=1",
    "--log_every=1",
    "--checkpoint_every=2",
    "--num_preview=0",
    "--noprobe",
    "--verbose=0",
]


def pretrain(args, env, command=None):
    environment = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3")
    environment.update(env)
    result = subprocess.run(
        [*(command or [sys.executable]), PRETRAIN, *TINY_RUN, *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert result.returncode == 0, stderr_report(result.stderr)
    return result.stdout


def log_losses(folder):
    from keras_aim import training

    return training.read_log(os.path.join(folder, training.LOG_FILE))["loss"]


@pytest.mark.extra_large
@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution is jax-only")
def test_pretrain_example_model_parallel_resumes_on_another_mesh(tmp_path):
    devices = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    single = str(tmp_path / "single")
    pretrain([f"--output_dir={single}"], devices)
    sharded = str(tmp_path / "sharded")
    pretrain(
        [f"--output_dir={sharded}", "--distribution=model", "--mesh=2x4"],
        devices,
    )
    with open(os.path.join(sharded, "summary.json")) as f:
        described = json.load(f)["distribution"]
    assert described == "model parallel on jax, 2 replicas, mesh (2, 4)"
    checkpoint = os.path.join(sharded, "checkpoints", "step_00000004")
    assert os.path.isdir(os.path.join(checkpoint, "orbax_state"))
    # Drop the last checkpoint: the run resumes from step 2 on a 4x2 mesh.
    shutil.rmtree(checkpoint)
    pretrain(
        [f"--output_dir={sharded}", "--distribution=model", "--mesh=4x2"],
        devices,
    )
    np.testing.assert_allclose(
        log_losses(sharded), log_losses(single), rtol=1e-4
    )


@pytest.mark.extra_large
@pytest.mark.skipif(BACKEND != "torch", reason="torchrun check")
def test_pretrain_example_under_torchrun(tmp_path):
    single = str(tmp_path / "single")
    pretrain([f"--output_dir={single}"], {})
    two = str(tmp_path / "two")
    torchrun = shutil.which("torchrun") or os.path.join(
        os.path.dirname(sys.executable), "torchrun"
    )
    pretrain(
        [f"--output_dir={two}", "--distribution=data"],
        {"OMP_NUM_THREADS": "1"},
        [torchrun, "--standalone", "--nproc_per_node=2"],
    )
    np.testing.assert_allclose(log_losses(two), log_losses(single), rtol=1e-5)


def test_remat_scope_recomputes_the_blocks_and_keeps_the_losses(monkeypatch):
    from keras.src.backend.common import remat as keras_remat

    from keras_aim.distribution.remat import remat_scope

    wrapped = []
    original = keras_remat.remat

    def counting_remat(function):
        owner = getattr(function, "__self__", None)
        wrapped.append(getattr(owner, "name", None))
        return original(function)

    monkeypatch.setattr(keras_remat, "remat", counting_remat)
    images = np.random.default_rng(0).normal(size=(4, 8, 8, 3))
    images = images.astype("float32")

    def losses(remat):
        keras.utils.set_random_seed(3)
        scope = remat_scope(2) if remat else contextlib.nullcontext()
        with scope:
            backbone = keras_aim.AIMBackbone(
                image_shape=(8, 8, 3),
                patch_size=4,
                hidden_dim=16,
                num_layers=2,
                num_heads=2,
            )
            pretrainer = keras_aim.AIMPretrainer(
                backbone, head_hidden_dim=16, head_num_layers=1, seed=1
            )
        pretrainer.compile(optimizer=keras.optimizers.AdamW(1e-2))
        return [float(pretrainer.train_on_batch(images)) for _ in range(3)]

    plain = losses(False)
    assert wrapped == []
    if BACKEND == "tensorflow":
        with pytest.raises(ValueError, match="not available on the tensorflow"):
            remat_scope(2)
        return
    rematerialised = losses(True)
    np.testing.assert_allclose(rematerialised, plain, rtol=1e-5)
    assert set(wrapped) == {"block_0", "block_1"}


def test_torch_ddp_shutdown_is_registered_and_destroys_the_group_once(
    tmp_path, monkeypatch
):
    import torch.distributed as dist

    from keras_aim.distribution import torch_ddp

    registered = []
    monkeypatch.setattr(torch_ddp.atexit, "register", registered.append)
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert torch_ddp.initialize() == (0, 1)  # not launched: no group
    assert registered == [] and not dist.is_initialized()
    # As torchrun would start it, in one process: a group of one.
    real_init = dist.init_process_group
    store = f"file://{tmp_path / 'store'}"
    monkeypatch.setattr(
        dist,
        "init_process_group",
        lambda backend: real_init(
            backend, init_method=store, rank=0, world_size=1
        ),
    )
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert torch_ddp.initialize("gloo") == (0, 1)
    assert registered == [torch_ddp.shutdown] and dist.is_initialized()
    assert torch_ddp.initialize("gloo") == (0, 1)  # already up: kept
    assert registered == [torch_ddp.shutdown]
    torch_ddp.shutdown()
    assert not dist.is_initialized()
    torch_ddp.shutdown()  # again: nothing to do
