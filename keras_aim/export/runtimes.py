"""Run an exported artifact in its own runtime, from NumPy to NumPy.

One loader per format, used by `examples/export.py` for its parity report
and by the tests: `load_artifact(path, format)` returns `run(images)`, a
function of a float32 `(B, H, W, C)` NumPy batch. Each runtime is imported
only when its format is asked for (they are optional: the `export`
extra installs them).
"""

import numpy as np

# The file (or folder) each format writes in an export folder.
ARTIFACT_NAMES = {
    "tf_saved_model": "saved_model",
    "onnx": "model.onnx",
    "openvino": "model.xml",
    "litert": "model.tflite",
    "torch": "model.pt2",
}
# The package that runs each format, for the error when it is missing.
RUNTIME_PACKAGES = {
    "tf_saved_model": "tensorflow",
    "onnx": "onnxruntime",
    "openvino": "openvino",
    "litert": "ai-edge-litert",
    "torch": "torch",
}


def load_artifact(path, format):
    """`run(images) -> outputs` for the artifact at `path`.

    Args:
        path: the exported file or folder.
        format: one of `ARTIFACT_NAMES`.
    """
    loaders = {
        "tf_saved_model": _saved_model,
        "onnx": _onnx,
        "openvino": _openvino,
        "litert": _litert,
        "torch": _torch,
    }
    if format not in loaders:
        raise ValueError(
            f"`format` must be one of {sorted(loaders)}; got {format!r}."
        )
    try:
        return loaders[format](str(path))
    except ImportError as error:
        raise ImportError(
            f"Running a {format!r} artifact needs "
            f"`pip install {RUNTIME_PACKAGES[format]}` (or keras-aim[export])"
            f": {error}"
        ) from error


def _saved_model(path):
    import tensorflow as tf

    artifact = tf.saved_model.load(path)

    def run(images):
        return np.asarray(artifact.serve(tf.constant(images)))

    return run


def _onnx(path):
    import onnxruntime

    session = onnxruntime.InferenceSession(
        path, providers=["CPUExecutionProvider"]
    )
    name = session.get_inputs()[0].name

    def run(images):
        return session.run(None, {name: np.asarray(images, "float32")})[0]

    return run


def _openvino(path):
    import openvino

    # OpenVINO runs in bfloat16 on CPUs that have it unless told f32.
    model = openvino.Core().compile_model(
        path, "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
    )

    def run(images):
        return np.asarray(model(np.asarray(images, "float32"))[0])

    return run


def _litert(path):
    import os

    from ai_edge_litert.interpreter import Interpreter

    # Every core this process may use, as ONNX Runtime and OpenVINO do.
    threads = len(os.sched_getaffinity(0))
    interpreter = Interpreter(model_path=path, num_threads=threads)
    index = interpreter.get_input_details()[0]["index"]
    output = interpreter.get_output_details()[0]["index"]
    allocated = [None]  # the input shape the tensors are allocated for

    def run(images):
        images = np.asarray(images, "float32")
        if images.shape != allocated[0]:
            interpreter.resize_tensor_input(index, images.shape, strict=False)
            interpreter.allocate_tensors()
            allocated[0] = images.shape
        interpreter.set_tensor(index, images)
        interpreter.invoke()
        return np.array(interpreter.get_tensor(output))

    return run


def _torch(path):
    import torch

    module = torch.export.load(path).module()

    def run(images):
        with torch.no_grad():
            out = module(torch.from_numpy(np.asarray(images, "float32")))
        return out.detach().cpu().numpy()

    return run
