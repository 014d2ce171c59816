"""TensorFlow: one op at a time between ops, set before TensorFlow starts.

Why this exists: TensorFlow 2.21 with oneDNN (its default on x86 CPUs)
corrupted the heap when two oneDNN ops ran at once on its inter-op
threads. `examples/probe.py` on TensorFlow (a 2-block width-32 backbone,
one epoch, two runs at a time on 2 cores) died in about 1 run in 15:
a segfault in `dnnl_memory_set_data_handle` under `MklEinsum` (likely
the attentive probe's key and value projections, two einsums of one shape
that TensorFlow may run side by side; inferred from the runs, not from a
TensorFlow bug report), or glibc's "corrupted double-linked list" when the
next tensor was allocated. With `TF_NUM_INTEROP_THREADS=1`
none of 158 runs crashed; `TF_ENABLE_ONEDNN_OPTS=0` stopped it as well,
but costs the float32 step 1.26x. Capping oneDNN below AMX did not stop
it (5 crashes in 64). docs/reliability.md has the runs, and
docs/benchmarks.md what the setting costs.

TensorFlow reads the variable when it creates its runtime (its first op),
so `import keras_aim` (and every example script, before it loads Keras)
sets it when Keras runs on TensorFlow, unless the user set it: any value
is their choice (`TF_NUM_INTEROP_THREADS=0` is TensorFlow's own default,
with the risk above). Each op still uses every core (intra-op threads).
Nothing is set on JAX or PyTorch, where TensorFlow only feeds data.
"""

import json
import os
import sys

VARIABLE = "TF_NUM_INTEROP_THREADS"
VALUE = "1"


def keras_backend_name(environ=None, modules=None):
    """The backend Keras runs (or will run) on, without importing Keras.

    Keras' own rule: a loaded Keras says; else `KERAS_BACKEND`; else the
    `backend` of `$KERAS_HOME/keras.json` (default `~/.keras`); else
    `"tensorflow"`.
    """
    environ = os.environ if environ is None else environ
    modules = sys.modules if modules is None else modules
    keras = modules.get("keras")
    backend = getattr(getattr(keras, "backend", None), "backend", None)
    if callable(backend):
        return backend()
    if environ.get("KERAS_BACKEND"):
        return environ["KERAS_BACKEND"]
    home = environ.get("KERAS_HOME") or os.path.join(
        os.path.expanduser("~"), ".keras"
    )
    try:
        with open(os.path.join(home, "keras.json"), encoding="utf-8") as f:
            config = json.load(f)
        return str(config.get("backend", "tensorflow"))
    except (OSError, ValueError, AttributeError):
        return "tensorflow"


def one_op_at_a_time(environ=None, modules=None):
    """Sets `TF_NUM_INTEROP_THREADS=1` where it avoids the crash above.

    Args:
        environ: the environment to change (default `os.environ`).
        modules: the loaded modules (default `sys.modules`).

    Returns:
        Whether it set the variable: not when the user set it, and not
        when Keras runs on JAX or PyTorch. (Set after TensorFlow ran its
        first op in this process, it has no effect: import keras_aim
        before computing.)
    """
    environ = os.environ if environ is None else environ
    if VARIABLE in environ:
        return False
    if keras_backend_name(environ, modules) != "tensorflow":
        return False
    environ[VARIABLE] = VALUE
    return True
