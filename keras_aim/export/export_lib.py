"""Export routes: every format Keras offers, on each backend, or a clear
error that names the route to take instead.

`export_model(model, filepath, format)` (also `model.export(...)` on the
backbones and tasks) makes the first call Keras needs, declares a dynamic
batch (and, where the route allows, any resolution that the patch size
divides) and picks the route for the current backend:

- Keras' own `model.export`, where it works;
- on JAX, SavedModel with shape polymorphism `(b, p*h, p*w, C)` (Keras'
  default `(b, a, c, C)` cannot prove the patch grid non-empty);
- on torch, our own `torch.export` of the model with a dynamic batch and,
  for a model built with `image_shape=(None, None, C)`, a dynamic height
  and width declared as multiples of the patch size (Keras traces unknown
  sizes as 2, which no patch fits); `.pt2` saves that program, ONNX goes
  through `torch.onnx.export(dynamo=True)` with the same dynamic shapes
  (Keras' TorchScript route fails in LayerNorm), and OpenVINO is converted
  from that ONNX file (Keras' route meets an op OpenVINO's torch front end
  lacks in Keras' BatchNorm).

The cells where Keras or a converter is at fault are in `UNSUPPORTED`,
each with the route to take; `docs/deployment.md` has reproductions.
"""

import os
import tempfile

import keras

FORMATS = ("tf_saved_model", "onnx", "openvino", "litert", "torch")
ALIASES = {"saved_model": "tf_saved_model", "tflite": "litert", "pt2": "torch"}
_RELOAD = (
    "save_to_preset, then load the preset with KERAS_BACKEND={backend} and "
    "export there (the weights are the same on every backend)"
)
UNSUPPORTED = {
    ("tensorflow", "torch"): "Keras writes .pt2 on the torch backend only; "
    + _RELOAD.format(backend="torch"),
    ("jax", "torch"): "Keras writes .pt2 on the torch backend only; "
    + _RELOAD.format(backend="torch"),
    ("jax", "litert"): "Keras 3.15 exports LiteRT from TensorFlow (or "
    "torch with litert-torch) only; " + _RELOAD.format(backend="tensorflow"),
    ("jax", "openvino"): "Keras 3.15's JAX route hands OpenVINO a jax2tf "
    "graph with XlaCallModule ops, which it cannot convert; "
    + _RELOAD.format(backend="tensorflow"),
    ("torch", "tf_saved_model"): "Keras 3.15 has no working SavedModel "
    "route on torch; " + _RELOAD.format(backend="tensorflow"),
    ("torch", "litert"): "Keras needs the litert-torch package (which pins "
    "its own transformers and torchao and exports batch 1 only); "
    + _RELOAD.format(backend="tensorflow"),
}
# Quantized models on routes that export but then fail to load, or load
# and give wrong outputs (measured on the tiny models of the tests).
QUANTIZED_UNSUPPORTED = {
    ("torch", "onnx", "int4"): "Keras' int4 kernel exports as a `Sub` of "
    "int8 and float32 tensors, which ONNX Runtime refuses to load; export "
    "format='torch' (.pt2) here, or KERAS_BACKEND=tensorflow (its ONNX "
    "export runs int4)",
    ("torch", "openvino", "int4"): "our OpenVINO route goes through ONNX, "
    "where Keras' int4 kernel becomes a `Sub` of int8 and float32 tensors "
    "that OpenVINO cannot convert; export format='torch' (.pt2) here, or "
    "KERAS_BACKEND=tensorflow (its OpenVINO export runs int4)",
    ("tensorflow", "openvino", "int8"): "OpenVINO's TensorFlow front end "
    "converts Keras' int8 matmuls but its outputs are wrong (differences "
    "of order 1 on the test model); export format='onnx' here, or "
    "KERAS_BACKEND=torch (its OpenVINO route, through ONNX, matches)",
    ("tensorflow", "litert", "int8"): "the LiteRT converter refuses Keras' "
    "int8 matmul (int8 inputs to `tfl.fully_connected`); export "
    "format='onnx' or 'tf_saved_model' here, or quantize to int4",
}
# Routes that take any image size (the patch size must divide it).
ANY_RESOLUTION = {
    ("tensorflow", "tf_saved_model"),
    ("tensorflow", "onnx"),
    ("tensorflow", "openvino"),
    ("tensorflow", "litert"),
    ("jax", "tf_saved_model"),
    ("torch", "torch"),
    ("torch", "onnx"),
    ("torch", "openvino"),
}
MAX_BATCH = 4096
# torch.export's bounds on a free height or width, in patches: it
# specialises a size of 1, so a free side has at least 2 patches.
MIN_PATCHES, MAX_PATCHES = 2, 1024
# The converter each (backend, format) route needs besides Keras.
CONVERTERS = {
    ("tensorflow", "onnx"): "tf2onnx",
    ("tensorflow", "openvino"): "openvino",
    ("torch", "onnx"): "onnxscript",
    ("torch", "openvino"): "openvino",
    ("jax", "tf_saved_model"): "tensorflow",
}


def resolve_format(format):
    """Keras' format name for `format` (also `saved_model`, `tflite`)."""
    name = ALIASES.get(format, format)
    if name not in FORMATS:
        raise ValueError(
            f"`format` must be one of {FORMATS} (or {sorted(ALIASES)}); got "
            f"format={format!r}."
        )
    return name


def check_route(format, backend=None):
    """Raises a `ValueError` with the route to take for a broken cell."""
    backend = backend or keras.backend.backend()
    reason = UNSUPPORTED.get((backend, format))
    if reason:
        raise ValueError(
            f"Exporting format={format!r} on the {backend} backend is not "
            f"supported: {reason}."
        )
    if (backend, format) == ("jax", "onnx") and not _importable("jax2onnx"):
        raise ImportError(
            "ONNX export on JAX needs jax2onnx, whose pins (flax, "
            "orbax-checkpoint<0.11.37) clash with keras-aim[jax]; install it "
            "in an environment of its own, or "
            + _RELOAD.format(backend="tensorflow")
            + " (or torch)."
        )
    package = CONVERTERS.get((backend, format))
    if package and not _importable(package):
        raise ImportError(
            f"format={format!r} on {backend} needs `pip install {package}` "
            "(part of keras-aim[export])."
        )


def quantization_modes(model):
    """The quantization modes of `model`'s layers (an empty set: float)."""
    return {
        layer.quantization_mode
        for layer in model._flatten_layers(include_self=False)
        if getattr(layer, "quantization_mode", None)
    }


def check_quantized_route(model, format, backend=None):
    """Raises a `ValueError` for a quantized model on a route that fails."""
    backend = backend or keras.backend.backend()
    for mode in sorted(quantization_modes(model)):
        reason = QUANTIZED_UNSUPPORTED.get((backend, format, mode))
        if reason:
            raise ValueError(
                f"Exporting a {mode}-quantized model to format={format!r} on "
                f"the {backend} backend is not supported: {reason}."
            )


def _importable(name):
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _patch_and_channels(model):
    backbone = getattr(model, "backbone", model)
    patch = getattr(backbone, "patch_size", None)
    shape = tuple(model.inputs[0].shape[1:])
    return patch, shape


def input_size(model, image_size=None, format="tf_saved_model"):
    """`(height, width, channels)` of the exported input (`None`: any).

    Args:
        model: the model to export.
        image_size: `None` (the model's own input size), an int or an
            `(height, width)` pair.
        format: the Keras format name.
    """
    patch, (height, width, channels) = _patch_and_channels(model)
    if image_size is not None:
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        size = tuple(int(s) for s in image_size)
        for want, got in zip((height, width), size):
            if want is not None and want != got:
                raise ValueError(
                    f"The model was built for {height}x{width} images; got "
                    f"image_size={image_size!r}. Rebuild it with "
                    "image_shape=(None, None, 3) (or from_preset(..., "
                    "image_shape=...)) to export another size."
                )
        if patch and any(s <= 0 or s % patch for s in size):
            raise ValueError(
                f"`image_size` must be positive multiples of the patch size "
                f"{patch}; got {image_size!r}."
            )
        height, width = size
    backend = keras.backend.backend()
    if (height is None or width is None) and (
        backend,
        format,
    ) not in ANY_RESOLUTION:
        raise ValueError(
            f"format={format!r} on {backend} exports one resolution (a "
            "dynamic batch only); pass image_size."
        )
    return height, width, channels


def ensure_called(model, size):
    """Calls a model that was never called (Keras exports only those)."""
    if getattr(model, "_called", False):
        return
    patch, _ = _patch_and_channels(model)
    height, width, channels = size
    height = height or 2 * (patch or 1)
    width = width or 2 * (patch or 1)
    model(keras.ops.zeros((1, height, width, channels)))


def export_model(
    model, filepath, format="tf_saved_model", image_size=None, verbose=False
):
    """Exports `model` for inference; returns the artifact's path.

    Args:
        model: a backbone (tokens), a task (logits) or `feature_model`.
        filepath: the file (`.onnx`, `.xml`, `.tflite`, `.pt2`) or folder
            (SavedModel) to write.
        format: `"tf_saved_model"` (or `"saved_model"`), `"onnx"`,
            `"openvino"`, `"litert"` or `"torch"`.
        image_size: `None` (the model's input size; any size for a model
            built with `image_shape=(None, None, 3)` where the route allows
            it), an int or `(height, width)`.
        verbose: print Keras' export messages.
    """
    format = resolve_format(format)
    check_route(format)
    check_quantized_route(model, format)
    size = input_size(model, image_size, format)
    ensure_called(model, size)
    filepath = os.fspath(filepath)
    spec = keras.InputSpec(shape=(None,) + size, dtype="float32", name="images")
    backend = keras.backend.backend()
    if backend == "torch":
        _torch_export(model, filepath, size, format)
        return filepath
    kwargs = {}
    if backend == "jax" and format == "tf_saved_model":
        patch, _ = _patch_and_channels(model)
        height = size[0] if size[0] is not None else f"{patch}*h"
        width = size[1] if size[1] is not None else f"{patch}*w"
        kwargs["jax2tf_kwargs"] = {
            "polymorphic_shapes": [f"(b, {height}, {width}, {size[2]})"]
        }
    keras.Model.export(
        model,
        filepath,
        format=format,
        verbose=verbose,
        input_signature=[spec],
        **kwargs,
    )
    return filepath


def torch_dynamic_shapes(model, size):
    """`torch.export` sizes: a sample batch and its dynamic dimensions.

    The batch is free; a free height or width is `patch * Dim(...)`, so the
    program knows the patch grid is whole (the strided conv, the reshape
    to tokens and the position table then trace with symbolic sizes).
    Sample sizes differ from each other and from 1: torch.export
    specialises a dimension traced at 1 and may merge equal ones.
    """
    import torch

    patch, _ = _patch_and_channels(model)
    patch = patch or 1
    shape, dims = [2], {0: torch.export.Dim("batch", min=1, max=MAX_BATCH)}
    for axis, (name, fixed, sample) in enumerate(
        (("rows", size[0], 3), ("cols", size[1], 5)), start=1
    ):
        if fixed is not None:
            shape.append(fixed)
            continue
        grid = torch.export.Dim(name, min=MIN_PATCHES, max=MAX_PATCHES)
        dims[axis] = patch * grid
        shape.append(patch * sample)
    return tuple(shape) + (size[2],), dims


def _torch_export(model, filepath, size, format):
    import torch

    class Module(torch.nn.Module):
        def __init__(self, wrapped):
            super().__init__()
            self.wrapped = wrapped

        def forward(self, images):
            return self.wrapped(images)

    module = Module(model)
    module.eval()
    shape, dims = torch_dynamic_shapes(model, size)
    sample = torch.zeros(shape, dtype=torch.float32)
    try:
        with torch.no_grad():
            if format == "torch":
                program = torch.export.export(
                    module, (sample,), dynamic_shapes=(dims,), strict=False
                )
                torch.export.save(program, filepath)
                return
            program = torch.onnx.export(
                module,
                (sample,),
                dynamo=True,
                input_names=["images"],
                output_names=["outputs"],
                dynamic_shapes=(dims,),
                verbose=False,
            )
    except Exception as error:  # torch.export's own failures
        if size[0] is not None and size[1] is not None:
            raise
        raise ValueError(
            f"torch.export could not export format={format!r} at any "
            f"resolution ({type(error).__name__}: {str(error)[:300]}); "
            "pass image_size=(height, width) for one resolution, or "
            + _RELOAD.format(backend="tensorflow")
            + "."
        ) from error
    program.optimize()
    if format == "onnx":
        program.save(filepath)
        return
    import openvino

    with tempfile.TemporaryDirectory() as folder:
        onnx_path = os.path.join(folder, "model.onnx")
        program.save(onnx_path)
        openvino.save_model(
            openvino.convert_model(onnx_path), filepath, compress_to_fp16=False
        )


def feature_model(backbone, pool="mean"):
    """A model of `backbone` that returns pooled `(B, hidden_dim)` features.

    Args:
        backbone: a `keras_aim.AIMBackbone`.
        pool: `"mean"` (the average of the final-LayerNorm tokens) or
            `"none"` (the tokens themselves: the backbone).
    """
    if pool == "none":
        return backbone
    if pool != "mean":
        raise ValueError(f"`pool` must be 'mean' or 'none'; got {pool!r}.")
    images = keras.Input(shape=backbone.image_shape, name="images")
    features = keras.ops.mean(backbone(images), axis=1)
    model = keras.Model(images, features, name="aim_features")
    model.patch_size = backbone.patch_size
    return model
