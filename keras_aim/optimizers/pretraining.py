"""The AIM pre-training optimizer: AdamW with warm-up and cosine decay."""

import keras

from keras_aim.utils.validation import positive_int

# Leaf variable names (Keras matches `variable.name`, not the full path)
# kept out of weight decay: Dense/Conv biases, LayerNorm gamma and beta,
# RMSNorm scale, position embeddings (AIMv2's learned table is a variable
# named `embeddings`) and the attentive-probe query.
NO_WEIGHT_DECAY_NAMES = (
    "bias",
    "gamma",
    "beta",
    "position_embedding",
    "pos_embed",
    "query",
    "scale",
    "embeddings",
)


def warmup_cosine_decay(
    peak_learning_rate, total_steps, warmup_steps, final_learning_rate=0.0
):
    """Keras' `CosineDecay`: linear warm-up from 0, then cosine decay.

    For step `s` (the optimizer's iteration counter, starting at 0):
    `peak * s / warmup_steps` while `s < warmup_steps`, then
    `final + (peak - final) * (1 + cos(pi * progress)) / 2` with
    `progress = min(1, (s - warmup_steps) / (total_steps - warmup_steps))`.
    The first step therefore has learning rate 0 when `warmup_steps > 0`.

    Args:
        peak_learning_rate: float, the learning rate at the end of warm-up.
        total_steps: int, steps of the whole schedule.
        warmup_steps: int, linear warm-up steps (`0 <= warmup_steps <=
            total_steps`).
        final_learning_rate: float, the rate reached at `total_steps` and
            kept afterwards. Defaults to 0.

    Returns:
        A `keras.optimizers.schedules.CosineDecay`.

    Example:

    >>> schedule = warmup_cosine_decay(1.0, total_steps=10, warmup_steps=2)
    >>> [round(float(schedule(s)), 3) for s in (0, 1, 2, 6, 10)]
    [0.0, 0.5, 1.0, 0.5, 0.0]
    """
    total_steps = positive_int(total_steps, "total_steps")
    if (
        isinstance(warmup_steps, bool)
        or not isinstance(warmup_steps, int)
        or not 0 <= warmup_steps <= total_steps
    ):
        raise ValueError(
            "`warmup_steps` must be an integer in [0, total_steps="
            f"{total_steps}]; got {warmup_steps!r}."
        )
    peak = float(peak_learning_rate)
    final = float(final_learning_rate)
    alpha = final / peak if peak else 0.0
    decay_steps = max(total_steps - warmup_steps, 1)
    if warmup_steps == 0:
        return keras.optimizers.schedules.CosineDecay(
            peak, decay_steps, alpha=alpha
        )
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps,
        alpha=alpha,
        warmup_target=peak,
        warmup_steps=warmup_steps,
    )


def peak_learning_rate(schedule):
    """The peak learning rate of a `warmup_cosine_decay` schedule."""
    if schedule.warmup_target is not None:
        return float(schedule.warmup_target)
    return float(schedule.initial_learning_rate)


@keras.saving.register_keras_serializable(package="keras_aim")
class PretrainingAdamW(keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` whose weight-decay exclusions are saved.

    `keras.optimizers.AdamW.exclude_from_weight_decay` is not part of the
    optimizer's config, so a compiled model reloaded from a `.keras` file
    would silently decay every variable again. This subclass takes the
    excluded name patterns as a constructor argument instead.

    Args:
        no_weight_decay_names: list of regular expressions searched in each
            variable's (leaf) name, e.g. `"bias"`; matching variables get no
            weight decay. Defaults to `NO_WEIGHT_DECAY_NAMES`.
        **kwargs: `keras.optimizers.AdamW` arguments.

    Example:

    >>> optimizer = PretrainingAdamW(learning_rate=1e-3)
    >>> optimizer.no_weight_decay_names[:3]
    ['bias', 'gamma', 'beta']
    """

    def __init__(self, no_weight_decay_names=None, **kwargs):
        super().__init__(**kwargs)
        if no_weight_decay_names is None:
            no_weight_decay_names = NO_WEIGHT_DECAY_NAMES
        self.no_weight_decay_names = [str(n) for n in no_weight_decay_names]
        if self.no_weight_decay_names:
            self.exclude_from_weight_decay(var_names=self.no_weight_decay_names)

    @property
    def learning_rate_schedule(self):
        """The `LearningRateSchedule`, or `None` for a constant rate."""
        schedule = self._learning_rate
        if isinstance(
            schedule, keras.optimizers.schedules.LearningRateSchedule
        ):
            return schedule
        return None

    def get_config(self):
        config = super().get_config()
        config["no_weight_decay_names"] = list(self.no_weight_decay_names)
        return config

    def learning_rate_scale(self, variable):
        """The factor on the learning rate of `variable` (here 1)."""
        return 1.0

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        # On torch, Keras would run `update_step` once per variable (a
        # subclass does not get its foreach AdamW);
        # keras_aim.optimizers.torch_adamw applies the same update in place,
        # about twice as fast.
        if keras.backend.backend() != "torch":
            return super()._backend_update_step(
                grads, trainable_variables, learning_rate
            )
        from keras_aim.optimizers import torch_adamw

        torch_adamw.adam_update(
            self,
            grads,
            trainable_variables,
            learning_rate,
            [self.learning_rate_scale(v) for v in trainable_variables],
        )


def scaled_learning_rate(
    batch_size,
    base_learning_rate=1e-3,
    base_batch_size=4096,
    gradient_accumulation_steps=None,
):
    """`base_learning_rate * effective_batch / base_batch_size` (linear rule).

    The effective batch is `batch_size * gradient_accumulation_steps`.

    Example:

    >>> scaled_learning_rate(1024)
    0.00025
    """
    batch_size = positive_int(batch_size, "batch_size")
    base_batch_size = positive_int(base_batch_size, "base_batch_size")
    effective = batch_size * (gradient_accumulation_steps or 1)
    return float(base_learning_rate) * effective / base_batch_size


def pretraining_optimizer(
    total_steps,
    batch_size,
    base_learning_rate=1e-3,
    base_batch_size=4096,
    warmup_fraction=0.025,
    weight_decay=0.05,
    beta_1=0.9,
    beta_2=0.95,
    epsilon=1e-8,
    global_clipnorm=1.0,
    gradient_accumulation_steps=None,
    final_learning_rate=0.0,
):
    """AdamW with the AIM pre-training recipe (El-Nouby et al., ICML 2024).

    The peak learning rate is `base_learning_rate` scaled linearly by the
    effective batch (`batch_size * gradient_accumulation_steps`) over
    `base_batch_size` (the paper: 1e-3 at 4096). It warms up linearly from
    0 over `round(warmup_fraction * total_steps)` steps, then decays with a
    cosine to `final_learning_rate` (Keras' `CosineDecay`, see
    `warmup_cosine_decay`). Gradients are
    clipped to a global norm of `global_clipnorm`. Weight decay is not
    applied to variables whose name contains one of `NO_WEIGHT_DECAY_NAMES`
    (biases, LayerNorm gamma/beta, position embeddings, the probe query).

    Steps are counted as the optimizer's iteration counter counts them:
    one per training batch (`fit` step), also with gradient accumulation,
    where the weights change every `gradient_accumulation_steps` batches.

    Args:
        total_steps: int, training batches of the whole run.
        batch_size: int, global examples per training batch.
        base_learning_rate: float. Defaults to 1e-3.
        base_batch_size: int. Defaults to 4096.
        warmup_fraction: float in [0, 1]. Defaults to 0.025.
        weight_decay: float. Defaults to 0.05.
        beta_1: float. Defaults to 0.9.
        beta_2: float. Defaults to 0.95.
        epsilon: float. Defaults to 1e-8.
        global_clipnorm: float or `None`. Defaults to 1.0.
        gradient_accumulation_steps: int >= 2 or `None`. Defaults to `None`.
        final_learning_rate: float. Defaults to 0.

    Returns:
        A `PretrainingAdamW` (a `keras.optimizers.AdamW` that keeps its
        weight-decay exclusions through `get_config`).

    Example:

    >>> optimizer = pretraining_optimizer(total_steps=1000, batch_size=256)
    >>> float(optimizer.learning_rate)  # step 0: the warm-up starts at 0
    0.0
    >>> peak_learning_rate(optimizer.learning_rate_schedule)  # 1e-3*256/4096
    6.25e-05
    """
    total_steps = positive_int(total_steps, "total_steps")
    if not 0.0 <= float(warmup_fraction) <= 1.0:
        raise ValueError(
            f"`warmup_fraction` must be in [0, 1]; got {warmup_fraction!r}."
        )
    if gradient_accumulation_steps is not None:
        gradient_accumulation_steps = positive_int(
            gradient_accumulation_steps, "gradient_accumulation_steps"
        )
        if gradient_accumulation_steps == 1:
            gradient_accumulation_steps = None
    peak = scaled_learning_rate(
        batch_size,
        base_learning_rate,
        base_batch_size,
        gradient_accumulation_steps,
    )
    schedule = warmup_cosine_decay(
        peak,
        total_steps,
        int(round(float(warmup_fraction) * total_steps)),
        final_learning_rate,
    )
    return PretrainingAdamW(
        learning_rate=schedule,
        weight_decay=weight_decay,
        beta_1=beta_1,
        beta_2=beta_2,
        epsilon=epsilon,
        global_clipnorm=global_clipnorm,
        gradient_accumulation_steps=gradient_accumulation_steps,
    )
