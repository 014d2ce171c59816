"""`keras.layers.Dense` with a faster kernel gradient on JAX.

Why this exists: JAX differentiates `x @ W` into `transpose(g^T x)` for
the kernel gradient, whatever the shapes. XLA's CPU matmul wants one
operand of that product transposed in memory, and layout assignment folds
the transpose into the elementwise fusion that produces the operand (for
`mlp_fc1` the GELU derivative, over 4x the width), a strided loop that
took about half of the main job's training step (measured with
`benchmarks/train_step.py`; the README has the numbers). Here a
`jax.custom_vjp` computes the kernel gradient as `x^T g` when `x` is the
narrower operand and as JAX does otherwise, so that the narrower one is
transposed. The forward pass, the input gradient and the values are
those of `keras.layers.Dense` (LoRA included: `self.kernel` carries the
low-rank update and autodiff takes its gradient through it); other
backends and quantized layers (Keras sends those to `quantized_call`)
run Keras' own code unchanged, and `quantize` gives every `AIMDense` the
quantized kernels of `keras.layers.Dense`.
"""

import functools

import keras
from keras import ops


@functools.cache
def _jax_matmul():
    """`matmul(x, w)` for `(..., in) x (in, out)` with a direct `x^T g`."""
    import jax
    import jax.numpy as jnp

    @jax.custom_vjp
    def matmul(x, w):
        return jnp.matmul(x, w)

    def forward(x, w):
        return jnp.matmul(x, w), (x, w)

    def backward(residuals, g):
        x, w = residuals
        dx = jnp.matmul(g, w.T).astype(x.dtype)
        # The GEMM wants one operand transposed in memory: transpose the
        # narrower of the two (fewer features, less to copy).
        if x.shape[-1] <= g.shape[-1]:
            dw = jnp.einsum("...i,...o->io", x, g)
        else:
            dw = jnp.einsum("...o,...i->oi", g, x).T
        dw = dw.astype(w.dtype)
        return dx, dw

    matmul.defvjp(forward, backward)
    return matmul


@keras.saving.register_keras_serializable(package="keras_aim")
class AIMDense(keras.layers.Dense):
    """`keras.layers.Dense` (same weights, config and outputs), faster on JAX.

    Used for every projection of the trunk, the pixel head and the probes.
    On JAX the kernel gradient is computed as `x^T g` (see the module
    docstring); elsewhere this is `keras.layers.Dense`.

    Example:

    >>> layer = keras_aim.layers.AIMDense(4, use_bias=False)
    >>> tuple(layer(np.ones((2, 3, 5), "float32")).shape)
    (2, 3, 4)
    """

    def call(self, inputs, training=None):
        if keras.backend.backend() != "jax":
            return super().call(inputs, training=training)
        inputs = ops.convert_to_tensor(inputs)
        kernel = ops.convert_to_tensor(self.kernel)
        if inputs.dtype != kernel.dtype:
            dtype = keras.backend.result_type(inputs.dtype, kernel.dtype)
            inputs = ops.cast(inputs, dtype)
            kernel = ops.cast(kernel, dtype)
        x = _jax_matmul()(inputs, kernel)
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def quantize(self, mode=None, type_check=True, config=None):
        """Keras' `Dense.quantize` (`"int8"`, `"int4"`, `"float8"`).

        Keras 3.15 refuses to quantize subclasses of `Dense` unless told
        `type_check=False`; this one keeps `Dense`'s variables and call, so
        it takes Keras' quantized kernels as they are (a quantized layer
        runs `quantized_call`, never the JAX float path above).
        """
        del type_check
        super().quantize(mode, type_check=False, config=config)
