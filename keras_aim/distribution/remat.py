"""Rematerialisation of the transformer blocks (a memory lever).

Keras' `RematScope(mode="full")` would wrap every layer, the functional
models themselves included, so a backward pass would recompute nested
layers several times over; the blocks are the unit that matters (their
attention scores and MLP activations dominate the memory kept for the
backward pass), so only they are rematerialised. (The pixel head cannot
be: its call takes the grid size and token order as Python values, which
`jax.checkpoint` would trace.)
"""

import keras


def remat_layer_names(num_layers):
    """The layers `remat_scope` rematerialises: the trunk's blocks."""
    return [f"block_{i}" for i in range(num_layers)]


def remat_scope(num_layers):
    """A `keras.RematScope` for models built inside it.

    Build the backbone and pretrainer inside the scope: Keras records the
    remat mode when a layer is created. Their outputs and gradients are
    unchanged; the blocks' activations are recomputed in the backward pass
    instead of being kept (about one more forward pass of compute).

    Raises ValueError on the tensorflow backend: Keras remats through
    `tf.recompute_grad`, whose `custom_gradient` takes no keyword
    arguments in graph mode, and a block receives its mask as one.
    """
    if keras.backend.backend() == "tensorflow":
        raise ValueError(
            "Rematerialisation (--remat) is not available on the tensorflow "
            "backend: Keras remats through tf.recompute_grad, which refuses "
            "the blocks' keyword arguments in graph mode. Use jax or torch."
        )
    return keras.RematScope(
        mode="list_of_layers", layer_names=remat_layer_names(num_layers)
    )
