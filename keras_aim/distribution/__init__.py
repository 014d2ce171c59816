"""Scaling out: layout maps for `keras.distribution`, and the glue for
data parallelism on PyTorch (`torch_ddp`) and TensorFlow (`tf_mirrored`).

Backend-specific modules are imported only when used.
"""

from keras_aim.distribution.layout import check_layout
from keras_aim.distribution.layout import get_layout_map
from keras_aim.distribution.layout import parse_mesh

__all__ = ["check_layout", "get_layout_map", "parse_mesh"]
