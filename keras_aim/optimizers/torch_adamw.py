"""The AdamW update of `keras_aim.optimizers` on the torch backend.

Why this exists: on the torch backend Keras runs `keras.optimizers.AdamW`
as `torch._foreach_*` calls that allocate five new tensors per variable
and step (and a subclass, such as ours, falls back to one `update_step`
per variable, worse still). On the CPU every new large tensor is fresh
memory to fault in, and the update of a 100M-parameter model took 0.57 s
against 0.24 s for `torch.optim.AdamW` (`benchmarks/train_step.py`
measures the whole step; the README has the numbers). This is the same
update as Keras' `Adam.update_step` (Keras' bias correction and epsilon,
so that every backend trains the same model), written with in-place
foreach operations and one temporary per variable; it never reads a
value back to the host. Weight decay, clipping, gradient accumulation and
EMA stay with Keras' `BaseOptimizer`.
"""

import torch
from keras import ops


@torch.no_grad()
def adam_update(optimizer, grads, variables, learning_rate, scales=None):
    """Applies one Adam step in place to `variables`.

    Args:
        optimizer: the built `keras.optimizers.Adam`/`AdamW` (its betas,
            epsilon, iteration count and slot variables are used).
        grads: torch tensors, one per variable.
        variables: the Keras variables to update.
        learning_rate: the step's learning rate (scalar tensor or float).
        scales: `None`, or one learning-rate factor per variable.
    """
    if scales is None:
        scales = [1.0] * len(variables)
    groups = {}
    for grad, variable, scale in zip(grads, variables, scales):
        key = (float(scale), variable.value.dtype)
        groups.setdefault(key, []).append((grad, variable))
    for (scale, dtype), pairs in groups.items():
        rate = learning_rate if scale == 1.0 else learning_rate * scale
        _update_group(optimizer, pairs, rate, dtype)


def _update_group(optimizer, pairs, learning_rate, dtype):
    index = optimizer._get_variable_index
    params = [v.value for _, v in pairs]
    grads = [g.to(dtype) for g, _ in pairs]
    momenta = [optimizer._momentums[index(v)].value for _, v in pairs]
    velocities = [optimizer._velocities[index(v)].value for _, v in pairs]

    step = ops.cast(optimizer.iterations, dtype) + 1
    beta_1 = float(optimizer.beta_1)
    beta_2 = float(optimizer.beta_2)
    rate = ops.cast(learning_rate, dtype)
    alpha = rate * torch.sqrt(1 - beta_2**step) / (1 - beta_1**step)

    # m += (g - m) (1 - b1); v += (g^2 - v) (1 - b2).
    torch._foreach_lerp_(momenta, grads, 1 - beta_1)
    torch._foreach_mul_(velocities, beta_2)
    torch._foreach_addcmul_(velocities, grads, grads, value=1 - beta_2)
    if optimizer.amsgrad:
        hats = [optimizer._velocity_hats[index(v)].value for _, v in pairs]
        torch._foreach_maximum_(hats, velocities)
        velocities = hats
    # var -= m alpha / (sqrt(v) + eps), as var -= m / ((sqrt(v) + eps) / a).
    denominators = torch._foreach_sqrt(velocities)
    torch._foreach_add_(denominators, float(optimizer.epsilon))
    torch._foreach_div_(denominators, alpha)
    torch._foreach_addcdiv_(params, momenta, denominators, value=-1.0)
