"""Sizes a config or a file may ask for, checked before anything is
allocated: far beyond any AIM model is refused unless
`KERAS_AIM_ALLOW_LARGE_MODELS=1` says it is meant.

Re-exported by `keras_aim.utils.validation`, the one validation layer.
"""

import os

ALLOW_LARGE_ENV = "KERAS_AIM_ALLOW_LARGE_MODELS"
# Far beyond any AIM (the 7B has width 4096, 32 blocks, patch 14).
SIZE_LIMITS = {
    "hidden_dim": 65536,
    "num_layers": 4096,
    "patch_size": 1024,
    "num_heads": 4096,
    "num_classes": 10_000_000,
    # Image sides (a converter's resize and crop): 8192 x 8192 x 3 float32
    # is 800 MB for one image.
    "image_side": 8192,
    # Tokens of one image (the released models: 256); attention over 65536
    # tokens is a 16 GB matrix per head and image in float32.
    "num_patches": 65536,
}


def _allow_large():
    return os.environ.get(ALLOW_LARGE_ENV, "") not in ("", "0")


def check_size_limit(value, name, argument=None):
    """Refuses a size far beyond any AIM unless the override is set.

    `name` picks the limit in `SIZE_LIMITS`; `argument` (default `name`)
    is what the message calls the value.
    """
    limit = SIZE_LIMITS[name]
    if value > limit and not _allow_large():
        raise ValueError(
            f"`{argument or name}`={value} is far beyond any AIM model "
            f"(limit {limit}); set {ALLOW_LARGE_ENV}=1 if you really mean it."
        )
    return value


def physical_memory_bytes():
    """The machine's physical memory, or `None` where it cannot be read."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def check_parameter_memory(num_parameters, bytes_per_parameter, what):
    """Refuses to build `what` if its weights alone exceed physical memory.

    A config from the internet can ask for any size; building it would
    allocate until the process dies. `KERAS_AIM_ALLOW_LARGE_MODELS=1`
    builds it anyway (e.g. under a distribution that shards it).
    """
    memory = physical_memory_bytes()
    needed = int(num_parameters) * int(bytes_per_parameter)
    if memory and needed > memory and not _allow_large():
        raise ValueError(
            f"{what} has {num_parameters:,} parameters: {needed / 1e9:.1f} GB "
            f"for the weights alone, more than this machine's "
            f"{memory / 1e9:.1f} GB of memory. Check the config (a width or "
            f"depth far beyond AIM's?), or set {ALLOW_LARGE_ENV}=1 to build "
            "it anyway."
        )


def backbone_parameter_count(
    patch_size, hidden_dim, num_layers, mlp_ratio=4.0, num_channels=3
):
    """Parameters of an AIM trunk, from its config (no build needed).

    Example:

    >>> backbone_parameter_count(14, 1536, 24)
    680535552
    """
    width = hidden_dim
    mlp = int(mlp_ratio * width)
    embed = patch_size * patch_size * num_channels * width + 3 * width
    block = 4 * width + 4 * width * width + 2 * width * mlp
    return embed + num_layers * block + 2 * width
