"""Export for inference (SavedModel, ONNX, OpenVINO, LiteRT, .pt2).

`model.export(path, format=...)` on a backbone or classifier, or
`export_model`; `load_artifact(path, format)` runs the result in its own
runtime. See `docs/deployment.md` for what works on which backend.
"""

from keras_aim.export.export_lib import ANY_RESOLUTION
from keras_aim.export.export_lib import FORMATS
from keras_aim.export.export_lib import QUANTIZED_UNSUPPORTED
from keras_aim.export.export_lib import UNSUPPORTED
from keras_aim.export.export_lib import check_quantized_route
from keras_aim.export.export_lib import check_route
from keras_aim.export.export_lib import export_model
from keras_aim.export.export_lib import feature_model
from keras_aim.export.export_lib import input_size
from keras_aim.export.export_lib import quantization_modes
from keras_aim.export.export_lib import resolve_format
from keras_aim.export.export_lib import torch_dynamic_shapes
from keras_aim.export.runtimes import ARTIFACT_NAMES
from keras_aim.export.runtimes import load_artifact

__all__ = [
    "ANY_RESOLUTION",
    "ARTIFACT_NAMES",
    "FORMATS",
    "QUANTIZED_UNSUPPORTED",
    "UNSUPPORTED",
    "check_quantized_route",
    "check_route",
    "export_model",
    "feature_model",
    "input_size",
    "load_artifact",
    "quantization_modes",
    "resolve_format",
    "torch_dynamic_shapes",
]
