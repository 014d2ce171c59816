"""The pre-training optimizer: schedule, decay exclusions, accumulation."""

import math

import keras
import numpy as np
import pytest
from conftest import to_numpy

from keras_aim.layers.attentive_probe import AIMAttentivePooling
from keras_aim.optimizers import LayerDecayAdamW
from keras_aim.optimizers import PretrainingAdamW
from keras_aim.optimizers import peak_learning_rate
from keras_aim.optimizers import pretraining_optimizer
from keras_aim.optimizers import warmup_cosine_decay


def np_schedule(step, peak, total, warmup, final=0.0):
    if step < warmup:
        return peak * step / warmup
    progress = min(1.0, (step - warmup) / max(total - warmup, 1))
    return final + (peak - final) * 0.5 * (1 + math.cos(math.pi * progress))


@pytest.mark.parametrize(
    "total,warmup,final", [(200, 5, 0.0), (40, 0, 0.0), (97, 10, 1e-5)]
)
def test_schedule_matches_numpy(total, warmup, final):
    schedule = warmup_cosine_decay(2e-3, total, warmup, final)
    assert type(schedule) is keras.optimizers.schedules.CosineDecay
    # Every warm-up step, the ends, and a seeded sample of the cosine part
    # (each eager schedule call costs a dispatch; 200 of them on jax took
    # longer than the rest of the module).
    interior = np.random.default_rng(total).choice(
        np.arange(warmup + 2, total - 1), size=16, replace=False
    )
    steps = np.unique(
        np.concatenate(
            [np.arange(warmup + 2), interior, np.arange(total - 1, total + 5)]
        )
    )
    values = np.array([float(schedule(int(s))) for s in steps])
    expected = [np_schedule(s, 2e-3, total, warmup, final) for s in steps]
    np.testing.assert_allclose(values, expected, rtol=1e-5, atol=1e-10)
    if warmup:
        assert values[0] == 0.0
        np.testing.assert_allclose(np.diff(values[: warmup + 1]), 2e-3 / warmup)
    np.testing.assert_allclose(values[warmup], 2e-3, rtol=1e-6)
    np.testing.assert_allclose(values[steps >= total], final, atol=1e-10)
    restored = keras.optimizers.schedules.deserialize(
        keras.optimizers.schedules.serialize(schedule)
    )
    assert float(restored(7)) == float(schedule(7))


def test_recipe_and_linear_scaling():
    optimizer = pretraining_optimizer(
        total_steps=400, batch_size=1024, base_learning_rate=1e-3
    )
    assert isinstance(optimizer, keras.optimizers.AdamW)
    schedule = optimizer.learning_rate_schedule
    assert peak_learning_rate(schedule) == pytest.approx(2.5e-4)
    assert schedule.warmup_steps == 10  # 2.5 % of 400
    assert optimizer.beta_1 == 0.9 and optimizer.beta_2 == 0.95
    assert optimizer.epsilon == 1e-8
    assert optimizer.weight_decay == 0.05
    assert optimizer.global_clipnorm == 1.0
    accumulated = pretraining_optimizer(
        400, batch_size=512, gradient_accumulation_steps=2
    )
    peak = peak_learning_rate(accumulated.learning_rate_schedule)
    assert peak == pytest.approx(2.5e-4)  # effective batch 1024
    assert accumulated.gradient_accumulation_steps == 2


def test_config_round_trip_keeps_the_decay_exclusions():
    optimizer = pretraining_optimizer(100, 64)
    config = keras.optimizers.serialize(optimizer)
    restored = keras.optimizers.deserialize(config)
    assert type(restored) is PretrainingAdamW
    assert restored.no_weight_decay_names == optimizer.no_weight_decay_names
    assert isinstance(
        restored.learning_rate_schedule,
        keras.optimizers.schedules.CosineDecay,
    )
    assert restored.get_config() == optimizer.get_config()


def make_variables():
    """Real layers whose variables the recipe must treat differently."""
    dense = keras.layers.Dense(4, name="dense")
    dense.build((None, 3))
    norm = keras.layers.LayerNormalization(name="norm")
    norm.build((None, 4))
    probe = AIMAttentivePooling(
        hidden_dim=8, num_heads=2, num_classes=3, name="probe_head"
    )
    probe.build((None, 5, 8))
    variables = dense.trainable_variables + norm.trainable_variables
    variables += [v for v in probe.trainable_variables if v.name == "query"]
    for variable in variables:
        variable.assign(keras.ops.ones(variable.shape) * 0.5)
    return variables


def test_weight_decay_skips_biases_norms_and_the_probe_query():
    variables = make_variables()
    names = sorted(v.name for v in variables)
    assert {"bias", "gamma", "beta", "query", "kernel"} <= set(names)
    optimizer = pretraining_optimizer(
        total_steps=10, batch_size=4096, warmup_fraction=0.0
    )
    lr = float(optimizer.learning_rate)
    assert lr == pytest.approx(1e-3)
    # A zero gradient leaves Adam's update at 0: only weight decay acts.
    zeros = [keras.ops.zeros(v.shape) for v in variables]
    optimizer.apply_gradients(zip(zeros, variables))
    for variable in variables:
        value = to_numpy(variable)
        if variable.name == "kernel":
            np.testing.assert_allclose(value, 0.5 * (1 - lr * 0.05), 1e-6)
        else:
            np.testing.assert_array_equal(value, 0.5)
    # Without the exclusions every variable would decay.
    plain = PretrainingAdamW(
        learning_rate=lr, weight_decay=0.05, no_weight_decay_names=[]
    )
    plain.apply_gradients(zip(zeros, variables[:2]))
    np.testing.assert_allclose(to_numpy(variables[1]), 0.5 * (1 - lr * 0.05))


def test_gradient_accumulation_averages_and_counts_every_batch():
    accumulated = keras.Variable(np.ones(3, "float32"), name="kernel")
    single = keras.Variable(np.ones(3, "float32"), name="kernel")
    optimizer = pretraining_optimizer(
        total_steps=8,
        batch_size=4096,
        warmup_fraction=0.25,  # 2 warm-up batches
        gradient_accumulation_steps=2,
    )
    g1 = np.array([0.1, -0.2, 0.3], "float32")
    g2 = np.array([0.3, 0.2, -0.1], "float32")
    optimizer.apply_gradients([(keras.ops.convert_to_tensor(g1), accumulated)])
    np.testing.assert_array_equal(to_numpy(accumulated), 1.0)  # no update yet
    # The schedule is evaluated at the batch counter (1 here), as Keras does.
    np.testing.assert_allclose(float(optimizer.learning_rate), 0.5 * 2e-3)
    optimizer.apply_gradients([(keras.ops.convert_to_tensor(g2), accumulated)])
    reference = PretrainingAdamW(
        learning_rate=0.5 * 2e-3,
        weight_decay=0.05,
        beta_1=0.9,
        beta_2=0.95,
        epsilon=1e-8,
        global_clipnorm=1.0,
    )
    mean = keras.ops.convert_to_tensor((g1 + g2) / 2)
    reference.apply_gradients([(mean, single)])
    np.testing.assert_allclose(
        to_numpy(accumulated), to_numpy(single), rtol=1e-6
    )
    assert not np.allclose(to_numpy(accumulated), 1.0)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(total_steps=0, batch_size=8), "total_steps"),
        (dict(total_steps=10, batch_size=0), "batch_size"),
        (dict(total_steps=10, batch_size=8, warmup_fraction=2.0), "warmup"),
        (
            dict(total_steps=10, batch_size=8, gradient_accumulation_steps=0),
            "gradient_accumulation_steps",
        ),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pretraining_optimizer(**kwargs)
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine_decay(1e-3, total_steps=10, warmup_steps=11)


def np_adamw(values, grads, steps, lr, scales, decays, amsgrad=False):
    """Keras' AdamW in NumPy: decoupled decay at the base rate, then Adam
    with `alpha = lr sqrt(1 - b2^t) / (1 - b1^t)` and epsilon 1e-7 outside
    the square root."""
    b1, b2, eps, wd = 0.9, 0.95, 1e-7, 0.05
    values = [v.astype("float64") for v in values]
    m = [np.zeros_like(v) for v in values]
    v2 = [np.zeros_like(v) for v in values]
    hat = [np.zeros_like(v) for v in values]
    for t in range(1, steps + 1):
        for i, g in enumerate(grads[t - 1]):
            if decays[i]:
                values[i] = values[i] * (1 - wd * lr)
            m[i] = m[i] + (g - m[i]) * (1 - b1)
            v2[i] = v2[i] + (g * g - v2[i]) * (1 - b2)
            hat[i] = np.maximum(hat[i], v2[i])
            alpha = lr * scales[i] * np.sqrt(1 - b2**t) / (1 - b1**t)
            root = np.sqrt(hat[i] if amsgrad else v2[i])
            values[i] = values[i] - m[i] * alpha / (root + eps)
    return values


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("layer_decay", [False, True])
def test_update_matches_numpy_adamw(layer_decay, amsgrad):
    # On torch this is keras_aim.optimizers.torch_adamw's in-place update;
    # elsewhere Keras' own update_step.
    rng = np.random.default_rng(0)
    names = ["block_0/kernel", "block_1/kernel", "block_1/bias", "head/k"]
    shapes = [(3, 4), (4, 2), (2,), (5,)]
    initial = [rng.normal(size=s).astype("float32") for s in shapes]
    variables = []
    for value, name in zip(initial, names):
        scope, leaf = name.split("/")
        with keras.name_scope(scope):
            variables.append(keras.Variable(value, name=leaf))
    assert [v.path for v in variables] == names
    kwargs = dict(learning_rate=0.01, beta_2=0.95, weight_decay=0.05)
    if layer_decay:
        scales = [0.25, 0.5, 0.5, 1.0]
        optimizer = LayerDecayAdamW(
            learning_rate_scales=[["block_0", 0.25], ["block_1", 0.5]],
            amsgrad=amsgrad,
            **kwargs,
        )
    else:
        scales = [1.0] * 4
        optimizer = PretrainingAdamW(amsgrad=amsgrad, **kwargs)
    steps = 4
    grads = [
        [rng.normal(size=s).astype("float32") for s in shapes]
        for _ in range(steps)
    ]
    for step_grads in grads:
        optimizer.apply_gradients(
            zip([keras.ops.convert_to_tensor(g) for g in step_grads], variables)
        )
    expected = np_adamw(
        initial, grads, steps, 0.01, scales, [True, True, False, True], amsgrad
    )
    for variable, want, start in zip(variables, expected, initial):
        got = to_numpy(variable)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert not np.allclose(got, start)
