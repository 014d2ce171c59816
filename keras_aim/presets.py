"""Built-in presets, Keras preset folders and the released hub layout.

A Keras preset folder holds `config.json` (the registered class and its
config), `model.weights.h5` (or sharded `model.weights.json` + shards for
models over 2 GB), `metadata.json` and, for classifiers with a converter,
`image_converter.json`.
"""

import datetime
import json
import os

import keras

from keras_aim.preprocessing import IMAGE_CONVERTER_FILE
from keras_aim.preprocessing import default_image_converter
from keras_aim.preprocessing import load_image_converter

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
        "description": "AIM-7B, 5B images; IN-1k probe 84.0 (best) / 82.4",
    },
}
PTH_REPO = "apple/AIM"
DEFAULT_IMAGE_SHAPE = (224, 224, 3)
NUM_CLASSES = 1000
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
SHARDED_WEIGHTS_FILE = "model.weights.json"
METADATA_FILE = "metadata.json"
SHARD_THRESHOLD_BYTES = 2 * 1024**3
SHARD_SIZE_GB = 2


def num_heads_for_preset(name):
    """Head count of a built-in preset; `ValueError` for unknown names."""
    return PRESETS[check_preset_name(name)]["backbone"]["num_heads"]


def check_preset_name(name):
    if name not in PRESETS:
        raise ValueError(
            f"Unknown preset {name!r}. Built-in presets: "
            f"{', '.join(PRESETS)}; or pass a folder (a Keras preset folder "
            "or a released hub folder with config.json + model.safetensors)."
        )
    return name


def best_probe_layers(backbone):
    """The released "best" probe blocks for a backbone of a released size."""
    for spec in PRESETS.values():
        arch = spec["backbone"]
        if (
            arch["hidden_dim"] == backbone.hidden_dim
            and arch["num_layers"] == backbone.num_layers
            and arch["num_heads"] == backbone.num_heads
            and arch["patch_size"] == backbone.patch_size
        ):
            return list(spec["best_layers"])
    return None


# --------------------------------------------------------------------------
# Loading


def load_preset(cls, preset, load_weights=True, **kwargs):
    """Implements `AIMBackbone.from_preset` and `AIMImageClassifier...`."""
    if not isinstance(preset, (str, os.PathLike)):
        raise ValueError(
            "`preset` must be a preset name, an hf:// handle or a folder; got "
            f"{preset!r}."
        )
    preset = os.fspath(preset)
    if os.path.isdir(preset):
        return _load_folder(cls, preset, load_weights, kwargs)
    if preset.startswith("hf://"):
        folder = _download_hub_repo(preset[len("hf://") :], preset)
        return _load_folder(cls, folder, load_weights, kwargs)
    if os.path.exists(preset):
        raise ValueError(
            f"`preset` {preset!r} is a file; pass its folder, or convert "
            "released .pth checkpoints with `python -m keras_aim.convert`."
        )
    name = check_preset_name(preset)
    if not load_weights:
        return _build_architecture(cls, name, kwargs)
    spec = PRESETS[name]
    if kwargs.get("probe_layers") == "last" and _is_classifier(cls):
        return _load_pth_pair_from_hub(cls, name, kwargs)
    folder = _download_hub_repo(spec["hub_repo"], name)
    kwargs.setdefault("num_heads", spec["backbone"]["num_heads"])
    return _load_folder(cls, folder, True, kwargs)


def _is_classifier(cls):
    from keras_aim.models.classifier import AIMImageClassifier

    return issubclass(cls, AIMImageClassifier)


def _build_architecture(cls, name, kwargs):
    from keras_aim.models.backbone import AIMBackbone
    from keras_aim.models.classifier import AIMImageClassifier

    kwargs = dict(kwargs)
    backbone_config = dict(PRESETS[name]["backbone"])
    backbone_config["image_shape"] = kwargs.pop(
        "image_shape", DEFAULT_IMAGE_SHAPE
    )
    dtype = kwargs.pop("dtype", None)
    if _is_classifier(cls):
        backbone = AIMBackbone(**backbone_config, dtype=dtype)
        kwargs.setdefault("num_classes", NUM_CLASSES)
        kwargs.setdefault("probe_layers", "best")
        kwargs.setdefault(
            "image_converter",
            default_image_converter(backbone_config["image_shape"]),
        )
        return AIMImageClassifier(backbone, dtype=dtype, **kwargs)
    _reject_classifier_kwargs(kwargs)
    backbone_config.update(kwargs)
    return AIMBackbone(**backbone_config, dtype=dtype)


def _reject_classifier_kwargs(kwargs):
    extra = {"probe_layers", "num_classes", "image_converter"} & set(kwargs)
    if extra:
        raise ValueError(
            f"AIMBackbone.from_preset does not take {sorted(extra)}; those "
            "belong to AIMImageClassifier.from_preset."
        )


def _download_hub_repo(repo_id, what):
    try:
        import huggingface_hub
    except ImportError as error:
        raise ValueError(
            f"Loading {what!r} needs huggingface_hub (pip install "
            "'keras-aim[convert]'). Offline, download the repository "
            f"{repo_id!r} elsewhere and pass its local folder to from_preset."
        ) from error
    try:
        return huggingface_hub.snapshot_download(repo_id)
    except Exception as error:  # Network and hub errors vary by version.
        raise ValueError(
            f"Could not fetch {what!r} from the Hugging Face hub repo "
            f"{repo_id!r} ({type(error).__name__}: {error}). Without a "
            "network, copy the repository (config.json + model.safetensors) "
            "to this machine and call from_preset('/path/to/folder'), or "
            "convert released .pth files with `python -m keras_aim.convert "
            "BACKBONE.pth --head HEAD.pth --preset NAME --output FOLDER` and "
            "pass FOLDER."
        ) from error


def _load_pth_pair_from_hub(cls, name, kwargs):
    from keras_aim import checkpoints

    prefix = PRESETS[name]["pth_prefix"]
    try:
        import huggingface_hub

        backbone_path = huggingface_hub.hf_hub_download(
            PTH_REPO, f"{prefix}_backbone.pth"
        )
        head_path = huggingface_hub.hf_hub_download(
            PTH_REPO, f"{prefix}_head_last_layers.pth"
        )
    except Exception as error:
        raise ValueError(
            f"Could not fetch the 'last layers' head of {name!r} from "
            f"{PTH_REPO!r} ({type(error).__name__}: {error}). Without a "
            "network, convert local files with `python -m keras_aim.convert "
            f"{prefix}_backbone.pth --head {prefix}_head_last_layers.pth "
            f"--preset {name} --output FOLDER` and pass FOLDER."
        ) from error
    kwargs = dict(kwargs)
    kwargs.pop("probe_layers")
    model = checkpoints.load_pth_checkpoint(
        backbone_path,
        head_path=head_path,
        num_heads=PRESETS[name]["backbone"]["num_heads"],
        probe_layers="last",
        **kwargs,
    )
    return _as_class(cls, model)


def _load_folder(cls, folder, load_weights, kwargs):
    config_path = os.path.join(folder, CONFIG_FILE)
    if not os.path.exists(config_path):
        raise ValueError(
            f"{folder!r} is not a preset folder: it has no {CONFIG_FILE}."
        )
    with open(config_path) as f:
        try:
            config = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(
                f"{config_path!r} is not valid JSON: {error}"
            ) from error
    if "class_name" in config and "config" in config:
        return _load_keras_preset(cls, folder, config, load_weights, kwargs)
    if "embed_dim" in config:
        return _load_released_folder(cls, folder, load_weights, kwargs)
    raise ValueError(
        f"{config_path!r} is neither a Keras preset config (class_name + "
        "config) nor a released AIM config (img_size, patch_size, embed_dim, "
        "num_blocks, num_heads, ...)."
    )


def _load_released_folder(cls, folder, load_weights, kwargs):
    from keras_aim import checkpoints

    kwargs = dict(kwargs)
    if _is_classifier(cls):
        model = checkpoints.load_hub_folder(
            folder, load_weights=load_weights, with_head=True, **kwargs
        )
    else:
        _reject_classifier_kwargs(kwargs)
        model = checkpoints.load_hub_folder(
            folder, load_weights=load_weights, with_head=False, **kwargs
        )
    return _as_class(cls, model)


def _as_class(cls, model):
    from keras_aim.models.classifier import AIMImageClassifier

    if isinstance(model, cls):
        return model
    if isinstance(model, AIMImageClassifier) and not _is_classifier(cls):
        return model.backbone
    raise ValueError(
        "This preset holds a backbone without a classification head; load "
        "it with AIMBackbone.from_preset, or build "
        "AIMImageClassifier(backbone, num_classes=...) to train a new head."
    )


def _load_keras_preset(cls, folder, config, load_weights, kwargs):
    from keras_aim.models.backbone import AIMBackbone
    from keras_aim.models.classifier import AIMImageClassifier
    from keras_aim.models.classifier import resolve_probe_layers

    kwargs = dict(kwargs)
    class_name = config["class_name"]
    inner = dict(config["config"])
    if class_name == "AIMImageClassifier":
        backbone_config = dict(inner["backbone"]["config"])
    elif class_name == "AIMBackbone":
        backbone_config = inner
    else:
        raise ValueError(
            f"{folder!r} holds a {class_name!r}, not an AIM backbone or "
            "classifier."
        )
    dtype = kwargs.pop("dtype", None)
    if "image_shape" in kwargs:
        backbone_config["image_shape"] = kwargs.pop("image_shape")
    if dtype is not None:
        backbone_config["dtype"] = dtype
    if not _is_classifier(cls):
        _reject_classifier_kwargs(kwargs)
        backbone_config.update(kwargs)
        kwargs = {}
    backbone = AIMBackbone.from_config(backbone_config)

    if class_name == "AIMBackbone":
        if _is_classifier(cls):
            raise ValueError(
                f"{folder!r} holds a backbone without a classification head; "
                "build AIMImageClassifier(backbone, num_classes=...) to "
                "train a new head."
            )
        model = backbone
    elif not _is_classifier(cls):
        # The weights were written for the whole classifier: load them into
        # the same structure, then hand back its backbone.
        model = AIMImageClassifier(
            backbone,
            num_classes=inner["num_classes"],
            probe_layers=list(inner["probe_layers"]),
        )
    else:
        saved_layers = list(inner["probe_layers"])
        requested = kwargs.pop("probe_layers", saved_layers)
        num_classes = kwargs.pop("num_classes", inner["num_classes"])
        if load_weights:
            layers = resolve_probe_layers(requested, backbone)
            if layers != saved_layers:
                raise ValueError(
                    f"The head in {folder!r} was trained on blocks "
                    f"{saved_layers}; probe_layers={requested!r} gives "
                    f"{layers}. Load with load_weights=False or train a new "
                    "head."
                )
            if num_classes != inner["num_classes"]:
                raise ValueError(
                    f"The head in {folder!r} has {inner['num_classes']} "
                    f"classes; got num_classes={num_classes}."
                )
        model = AIMImageClassifier(
            backbone,
            num_classes=num_classes,
            probe_layers=requested,
            image_converter=kwargs.pop(
                "image_converter", load_image_converter(folder)
            ),
            dtype=dtype,
            **kwargs,
        )
    if load_weights:
        _load_weights(model, folder)
    return model if _is_classifier(cls) else backbone


def _load_weights(model, folder):
    path = os.path.join(folder, SHARDED_WEIGHTS_FILE)
    if not os.path.exists(path):
        path = os.path.join(folder, WEIGHTS_FILE)
    if not os.path.exists(path):
        raise ValueError(
            f"{folder!r} has no weights ({WEIGHTS_FILE} or "
            f"{SHARDED_WEIGHTS_FILE}); use load_weights=False for the "
            "architecture only."
        )
    try:
        model.load_weights(path)
    except Exception as error:
        raise ValueError(
            f"Could not load weights from {path!r}: {error}"
        ) from error


# --------------------------------------------------------------------------
# Saving


def save_preset(model, preset_dir):
    """Writes `model` into the Keras preset folder `preset_dir`."""
    preset_dir = os.fspath(preset_dir)
    try:
        os.makedirs(preset_dir, exist_ok=True)
    except OSError as error:
        raise ValueError(
            f"Cannot create the preset folder {preset_dir!r}: {error}"
        ) from error
    if not os.access(preset_dir, os.W_OK):
        raise ValueError(f"Preset folder {preset_dir!r} is not writable.")
    config = {
        "module": "keras_aim",
        "class_name": type(model).__name__,
        "registered_name": f"keras_aim>{type(model).__name__}",
        "config": model.get_config(),
    }
    _write_json(os.path.join(preset_dir, CONFIG_FILE), config)
    num_bytes = sum(_variable_bytes(v) for v in model.weights)
    for name in (WEIGHTS_FILE, SHARDED_WEIGHTS_FILE, IMAGE_CONVERTER_FILE):
        stale = os.path.join(preset_dir, name)
        if os.path.exists(stale):
            os.remove(stale)
    if num_bytes > SHARD_THRESHOLD_BYTES:
        model.save_weights(
            os.path.join(preset_dir, SHARDED_WEIGHTS_FILE),
            max_shard_size=SHARD_SIZE_GB,
        )
    else:
        model.save_weights(os.path.join(preset_dir, WEIGHTS_FILE))
    converter = getattr(model, "image_converter", None)
    if converter is not None:
        converter.save_to_preset(preset_dir)
    _write_json(
        os.path.join(preset_dir, METADATA_FILE),
        {
            "keras_aim_version": _version(),
            "keras_version": keras.__version__,
            "parameter_count": int(model.count_params()),
            "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M"),
        },
    )


def _variable_bytes(variable):
    dtype = keras.backend.standardize_dtype(variable.dtype)
    itemsize = 2 if "16" in dtype else 8 if "64" in dtype else 4
    size = 1
    for dim in variable.shape:
        size *= int(dim)
    return size * itemsize


def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)


def _version():
    from keras_aim import __version__

    return __version__
