"""TensorFlow on AMX CPUs: oneDNN capped below AMX before it first runs.

Why this exists: on an Intel Xeon with AMX and AVX-512 BF16 (the project's
CI machine), TensorFlow 2.21's oneDNN kernels corrupted the heap in about
1 probe run in 20 (`examples/probe.py` on TensorFlow: a segfault, or
glibc's "corrupted size vs. prev_size" abort, inside `fit`). With oneDNN
capped at AVX-512 BF16 (`ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16`: no AMX
tiles) none of 90 runs crashed, and TensorFlow's float32 training step
kept its speed; `TF_ENABLE_ONEDNN_OPTS=0` also stopped the crashes but made
the float32 step 1.26x slower (docs/reliability.md has the runs). The
earlier AMD machine (AVX2) never crashed.

oneDNN reads the variable when it runs its first kernel, so `import
keras_aim` (and every example script, before it loads Keras) sets it when
Keras runs on TensorFlow on a CPU that reports AMX, unless the user set it
or `TF_ENABLE_ONEDNN_OPTS`: any value of either is their choice
(`ONEDNN_MAX_CPU_ISA=ALL` keeps AMX, and TensorFlow's bfloat16 speed on
it, with the risk above). On JAX and PyTorch nothing is set: PyTorch's own
oneDNN (which reads the same variable) takes its bfloat16 speed from AMX,
and TensorFlow only feeds data there.
"""

import json
import os
import sys

VARIABLE = "ONEDNN_MAX_CPU_ISA"
CAP = "AVX512_CORE_BF16"
USER_CHOICES = (VARIABLE, "TF_ENABLE_ONEDNN_OPTS")


def cpu_has_amx(cpuinfo="/proc/cpuinfo"):
    """Whether the CPU flags list AMX tiles (Linux; `False` elsewhere)."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as file:
            for line in file:
                if line.startswith("flags"):
                    return "amx_tile" in line.split()
    except OSError:
        return False
    return False


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


def cap_onednn_on_amx(environ=None, modules=None, cpuinfo="/proc/cpuinfo"):
    """Sets `ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16` where it avoids the
    crash above.

    Args:
        environ: the environment to change (default `os.environ`).
        modules: the loaded modules (default `sys.modules`).
        cpuinfo: where the CPU flags are read.

    Returns:
        Whether it set the variable: not when the user set it or
        `TF_ENABLE_ONEDNN_OPTS`, not when Keras runs on JAX or PyTorch, and
        not on CPUs without AMX. (Set after oneDNN ran its first kernel in
        this process, it has no effect: import keras_aim before computing.)
    """
    environ = os.environ if environ is None else environ
    if any(name in environ for name in USER_CHOICES):
        return False
    if keras_backend_name(environ, modules) != "tensorflow":
        return False
    if not cpu_has_amx(cpuinfo):
        return False
    environ[VARIABLE] = CAP
    return True
