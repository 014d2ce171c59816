"""The exact (erf) GELU of the AIM blocks, in a form every exporter takes."""

import math

import keras
from keras import ops

_INV_SQRT2 = 1.0 / math.sqrt(2.0)


def exact_gelu(x):
    """`0.5 * x * (1 + erf(x / sqrt(2)))`, the exact GELU.

    The same values as `keras.ops.gelu(x, approximate=False)` (to 1e-6 in
    float32). On TensorFlow, `tf.nn.gelu` writes it with `erfc`, which
    tf2onnx turns into an ONNX `Erfc` node that ONNX Runtime does not
    implement; the `erf` form exports. Elsewhere Keras' own (fused) GELU
    runs.

    Example:

    >>> round(float(exact_gelu(keras.ops.convert_to_tensor(1.0))), 4)
    0.8413
    """
    if keras.backend.backend() != "tensorflow":
        return ops.gelu(x, approximate=False)
    x = ops.convert_to_tensor(x)
    return 0.5 * x * (1.0 + ops.erf(x * _INV_SQRT2))
