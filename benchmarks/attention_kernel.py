"""Which attention kernel ran: the one detection every benchmark uses.

Keras' `ops.dot_product_attention` picks its implementation at run time
(torch: one of the SDPA kernels, or none; jax: cuDNN, Splash or XLA's
plain softmax attention; tensorflow: einsum and softmax), so a benchmark
records what ran, read from the run itself, not what it asked for:

- torch: the op names `torch.profiler` records while the call runs (e.g.
  `aten::_scaled_dot_product_flash_attention_for_cpu`);
- jax: the custom calls of the compiled HLO (`__cudnn$fmha...`, the Mosaic
  call of Splash attention) or, without any, XLA's own softmax attention;
- tensorflow: the op types of the traced graph (Keras' TensorFlow backend
  has no fused attention kernel), and whether XLA compiles it.

`detect_model(model, inputs, ...)` reads it from a whole model's forward
pass (what the speed benchmarks time); `detect_call(q, k, v, mask)` from
one `dot_product_attention` with the arguments keras_aim's layers pass
(the device run). Both return a JSON-able dict whose `"ran"` names the
kernel; `backend`, `dtype` and `masked` say which row it belongs to.
"""

import numpy as np

# Substrings of torch op names that belong to attention.
TORCH_WORDS = ("scaled_dot_product", "attention", "flash", "sdp")


def backend():
    import keras

    return keras.backend.backend()


def flash_setting():
    from keras_aim.layers.transformer_block import flash_attention_setting

    return flash_attention_setting()


def torch_ops(call):
    """Runs `call()` under `torch.profiler`; the attention ops it ran."""
    import torch

    with torch.profiler.profile() as profiler:
        call()
    names = {e.key for e in profiler.key_averages()}
    attention = sorted(n for n in names if any(w in n for w in TORCH_WORDS))
    return attention, names


def torch_kernel_name(attention_ops, all_ops=()):
    """The forward kernel among the profiled op names."""
    kernels = [
        n
        for n in attention_ops
        if "_scaled_dot_product_" in n and not n.endswith("_backward")
    ]
    if kernels:
        return kernels[0]
    if attention_ops:
        return attention_ops[0]
    if any("softmax" in n for n in all_ops):
        return "no fused kernel (matmul + softmax)"
    return "none found"


def jax_hlo_kernel(hlo_text):
    """(kernel, custom calls) read from compiled HLO text."""
    calls = sorted(
        {
            line.split('custom_call_target="')[1].split('"')[0]
            for line in hlo_text.splitlines()
            if 'custom_call_target="' in line
        }
    )
    lowered = hlo_text.lower()
    if "cudnn" in lowered and "fmha" in lowered:
        ran = "cudnn fused attention"
    elif "splash" in lowered or "mosaic" in lowered:
        ran = "splash (pallas)"
    elif "tpu_custom_call" in lowered:
        ran = "pallas tpu kernel"
    else:
        ran = "xla (plain softmax attention)"
    return ran, calls


def jax_compiled_text(function, *args):
    import jax

    return jax.jit(function).lower(*args).compile().as_text()


def tensorflow_op_types(function, *args, jit_compile=False):
    """Op types of `function` traced by `tf.function` on `args`."""
    import tensorflow as tf

    traced = tf.function(function, jit_compile=jit_compile)
    graph = traced.get_concrete_function(*args).graph
    types = {op.type for op in graph.get_operations()}
    for inner in graph._functions.values():  # while loops and the like
        types |= {op.type for op in inner.graph.get_operations()}
    return types


def tensorflow_kernel_name(types, jit_compile):
    fused = sorted(
        t
        for t in types
        if any(w in t.lower() for w in ("attention", "fmha", "flash"))
    )
    if fused:
        return fused[0]
    pieces = [t for t in ("Einsum", "BatchMatMulV2", "Softmax") if t in types]
    where = "xla" if jit_compile else "tf graph"
    if "Softmax" in types:
        return f"{where}: {' + '.join(pieces).lower()}"
    return f"{where}: no attention ops found"


def detect(function, args, call=None, jit_compile=False):
    """The attention kernel `function(*args)` runs on the current backend.

    Args:
        function: a pure function of `args` (jax compiles it; tensorflow
            traces it).
        args: its arguments (tensors or nested lists of them).
        call: torch only: the call to profile instead of `function(*args)`
            (e.g. the benchmark's own untimed warm-up call).
        jit_compile: tensorflow only: whether the real call is compiled
            by XLA (then reported as such).
    """
    name = backend()
    if name == "torch":
        attention, names = torch_ops(call or (lambda: function(*args)))
        return {"ran": torch_kernel_name(attention, names), "ops": attention}
    if name == "jax":
        ran, calls = jax_hlo_kernel(jax_compiled_text(function, *args))
        return {"ran": ran, "custom_calls": calls}
    if name == "tensorflow":
        types = tensorflow_op_types(function, *args, jit_compile=jit_compile)
        keep = ("Einsum", "BatchMatMul", "Softmax", "Attention", "Fmha")
        ops = sorted(t for t in types if any(k in t for k in keep))
        return {
            "ran": tensorflow_kernel_name(types, jit_compile),
            "ops": ops,
            "xla": bool(jit_compile),
        }
    raise ValueError(f"Unsupported backend {name!r}.")


def detect_model(model, inputs, masked, training=False, call=None):
    """The attention kernel in `model(inputs, training=training)`.

    Args:
        model: a built Keras model (e.g. `AIMBackbone`, `AIMPretrainer`).
        inputs: a NumPy batch.
        masked: whether its attention gets a mask (recorded as given).
        training: the `training` argument of the forward pass.
        call: torch only: the real call to profile (default: a forward
            pass, with gradients when `training`).
    """
    name = backend()
    report = {
        "backend": name,
        "dtype": model.dtype_policy.compute_dtype,
        "masked": bool(masked),
        "flash_attention_argument": flash_setting(),
    }
    if name == "jax":
        trainable = [v.value for v in model.trainable_variables]
        frozen = [v.value for v in model.non_trainable_variables]

        def forward(trainable, frozen, x):
            outputs, _ = model.stateless_call(
                trainable, frozen, x, training=training
            )
            return outputs

        report.update(detect(forward, (trainable, frozen, inputs)))
    elif name == "torch":
        if call is None:
            import torch

            def call():
                with torch.set_grad_enabled(training):
                    model(inputs, training=training)

        report.update(detect(None, (), call=call))
    else:
        import tensorflow as tf

        jit = bool(getattr(model, "jit_compile", False))
        spec = tf.TensorSpec(inputs.shape, inputs.dtype)
        report.update(
            detect(
                lambda x: model(x, training=training),
                (spec,),
                jit_compile=jit,
            )
        )
    return report


def detect_call(q, k, v, mask):
    """One `ops.dot_product_attention` as keras_aim's layers call it."""
    import keras

    setting = flash_setting()

    def attend(q, k, v, mask):
        return keras.ops.dot_product_attention(
            q, k, v, mask=mask, flash_attention=setting
        )

    def run():
        np.asarray(keras.ops.convert_to_numpy(attend(q, k, v, mask)))

    report = {
        "backend": backend(),
        "dtype": str(keras.backend.standardize_dtype(q.dtype)),
        "masked": mask is not None,
        "flash_attention_argument": setting,
    }
    if backend() == "tensorflow":
        import tensorflow as tf

        specs = [tf.TensorSpec(t.shape, t.dtype) for t in (q, k, v)]
        if mask is not None:
            specs.append(tf.TensorSpec(mask.shape, mask.dtype))
            report.update(detect(attend, specs))
        else:
            report.update(detect(lambda q, k, v: attend(q, k, v, None), specs))
        return report
    report.update(detect(attend, (q, k, v, mask), call=run))
    return report
