"""Argument checks shared across keras_aim, with messages that name the
argument, the value and what is allowed.

Every public entry point validates through these functions, so a rule
(what a head count, a probe-layer list, an image batch or a size from a
config may be) is written once: `arguments` (constructor and call
arguments), `inputs` (image batches, prefix lengths, Keras loop data) and
`limits` (sizes far beyond any AIM). The package imports only NumPy.
"""

from keras_aim.utils.validation.arguments import MODEL_KWARGS
from keras_aim.utils.validation.arguments import TASK_ONLY_ARGS
from keras_aim.utils.validation.arguments import channel_values
from keras_aim.utils.validation.arguments import check_model_kwargs
from keras_aim.utils.validation.arguments import check_num_heads
from keras_aim.utils.validation.arguments import check_prefix_range
from keras_aim.utils.validation.arguments import positive_int
from keras_aim.utils.validation.arguments import reject_task_args
from keras_aim.utils.validation.arguments import resolve_block_indices
from keras_aim.utils.validation.arguments import resolve_probe_layers
from keras_aim.utils.validation.arguments import size_pair
from keras_aim.utils.validation.inputs import RAW_PIXEL_THRESHOLD
from keras_aim.utils.validation.inputs import _first_array  # noqa: F401
from keras_aim.utils.validation.inputs import check_image_shape
from keras_aim.utils.validation.inputs import check_image_tensor
from keras_aim.utils.validation.inputs import check_image_values
from keras_aim.utils.validation.inputs import check_not_empty
from keras_aim.utils.validation.inputs import check_prefix_lengths
from keras_aim.utils.validation.limits import ALLOW_LARGE_ENV
from keras_aim.utils.validation.limits import SIZE_LIMITS
from keras_aim.utils.validation.limits import backbone_parameter_count
from keras_aim.utils.validation.limits import check_parameter_memory
from keras_aim.utils.validation.limits import check_size_limit
from keras_aim.utils.validation.limits import physical_memory_bytes

__all__ = [
    "ALLOW_LARGE_ENV",
    "MODEL_KWARGS",
    "RAW_PIXEL_THRESHOLD",
    "SIZE_LIMITS",
    "TASK_ONLY_ARGS",
    "backbone_parameter_count",
    "channel_values",
    "check_image_shape",
    "check_image_tensor",
    "check_image_values",
    "check_model_kwargs",
    "check_not_empty",
    "check_num_heads",
    "check_parameter_memory",
    "check_prefix_lengths",
    "check_prefix_range",
    "check_size_limit",
    "physical_memory_bytes",
    "positive_int",
    "reject_task_args",
    "resolve_block_indices",
    "resolve_probe_layers",
    "size_pair",
]
