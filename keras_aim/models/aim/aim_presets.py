"""The built-in AIM presets: pure data, imported by models and loaders.

Each entry gives the architecture of a released AIM size (El-Nouby et al.,
ICML 2024), its "best" probe blocks, the Hugging Face hub repository of the
weights and the file prefix of its `.pth` pair in `apple/AIM`. This module
imports nothing, so that every other module can read the table.
"""

PRESETS = {
    "aim_600m": {
        "backbone": {
            "patch_size": 14,
            "hidden_dim": 1536,
            "num_layers": 24,
            "num_heads": 12,
        },
        "best_layers": [14, 15, 16, 17, 18, 19],
        "hub_repo": "apple/aim-600M",
        "pth_prefix": "aim_600m_2bimgs_attnprobe",
        "sha256": {  # prefixes published in the release's README
            "backbone": "0d6f6b8f",
            "head_last_layers": "5ce5a341",
            "head_best_layers": "ebd45c05",
        },
        "description": "AIM-0.6B, 2B images; IN-1k probe 79.4 (best) / 78.5",
    },
    "aim_1b": {
        "backbone": {
            "patch_size": 14,
            "hidden_dim": 2048,
            "num_layers": 24,
            "num_heads": 16,
        },
        "best_layers": [12, 13, 14, 15, 16, 17],
        "hub_repo": "apple/aim-1B",
        "pth_prefix": "aim_1b_5bimgs_attnprobe",
        "sha256": {  # prefixes published in the release's README
            "backbone": "d254ecd3",
            "head_last_layers": "db3be2ad",
            "head_best_layers": "f1ed7852",
        },
        "description": "AIM-1B, 5B images; IN-1k probe 82.3 (best) / 80.6",
    },
    "aim_3b": {
        "backbone": {
            "patch_size": 14,
            "hidden_dim": 3072,
            "num_layers": 24,
            "num_heads": 24,
        },
        "best_layers": [12, 13, 14, 15, 16, 17],
        "hub_repo": "apple/aim-3B",
        "pth_prefix": "aim_3b_5bimgs_attnprobe",
        "sha256": {  # prefixes published in the release's README
            "backbone": "8475ce4e",
            "head_last_layers": "5c057b30",
            "head_best_layers": "ad380e16",
        },
        "description": "AIM-3B, 5B images; IN-1k probe 83.3 (best) / 82.2",
    },
    "aim_7b": {
        "backbone": {
            "patch_size": 14,
            "hidden_dim": 4096,
            "num_layers": 32,
            "num_heads": 32,
        },
        "best_layers": [14, 15, 16, 17, 18, 19],
        "hub_repo": "apple/aim-7B",
        "pth_prefix": "aim_7b_5bimgs_attnprobe",
        "sha256": {  # prefixes published in the release's README
            "backbone": "184ed94c",
            "head_last_layers": "1e5c99ba",
            "head_best_layers": "73ecd732",
        },
        "description": "AIM-7B, 5B images; IN-1k probe 84.0 (best) / 82.4",
    },
}
PTH_REPO = "apple/AIM"
DEFAULT_IMAGE_SHAPE = (224, 224, 3)
NUM_CLASSES = 1000
# The released "last" heads probe the last six blocks.
NUM_LAST_LAYERS = 6


def check_preset_name(name):
    """Returns `name` if it is a built-in preset; else a `ValueError`."""
    if name not in PRESETS:
        raise ValueError(
            f"Unknown preset {name!r}. Built-in presets: "
            f"{', '.join(PRESETS)}; or pass a folder (a Keras preset folder "
            "or a released hub folder with config.json + model.safetensors)."
        )
    return name


def num_heads_for_preset(name):
    """Head count of a built-in preset; `ValueError` for unknown names."""
    return PRESETS[check_preset_name(name)]["backbone"]["num_heads"]


def best_probe_layers(patch_size, hidden_dim, num_layers, num_heads):
    """The released "best" probe blocks of a released size, or `None`."""
    for spec in PRESETS.values():
        arch = spec["backbone"]
        if (
            arch["patch_size"] == patch_size
            and arch["hidden_dim"] == hidden_dim
            and arch["num_layers"] == num_layers
            and arch["num_heads"] == num_heads
        ):
            return list(spec["best_layers"])
    return None


def released_sha256_prefix(filename):
    """The published SHA-256 prefix of a released `.pth` file, by name.

    Example:

    >>> released_sha256_prefix("aim_600m_2bimgs_attnprobe_backbone.pth")
    '0d6f6b8f'
    """
    for spec in PRESETS.values():
        for part, prefix in spec["sha256"].items():
            if filename == f"{spec['pth_prefix']}_{part}.pth":
                return prefix
    return None
