"""Presets: the `PresetLoader` base, Keras preset folders, `save_preset`.

As in keras-hub, `get_preset_loader(preset)` (in `keras_aim.convert.loaders`,
which knows every source) returns a `PresetLoader` for whatever `preset`
names (a built-in name, an `hf://` handle, a Keras preset folder, a released
hub folder), and the model classes call
`loader.load_backbone(cls, load_weights, **kwargs)` (an instance of the
backbone class `cls`) or `loader.load_task(cls, load_weights, **kwargs)`
(an instance of the task class `cls`, built on `cls.backbone_cls`).
`kwargs` are constructor overrides (`image_shape`, `dtype`, and for tasks
`probe_layers`, `num_classes`, `image_converter`, ...).

A Keras preset folder holds `config.json` (the registered class and its
config), `model.weights.h5` (or sharded `model.weights.json` + shards for
models over 2 GB), `metadata.json` and, for classifiers with a converter,
`image_converter.json`.
"""

import copy
import datetime
import os

import keras

from keras_aim.models.aim.aim_image_converter import IMAGE_CONVERTER_FILE
from keras_aim.models.aim.aim_image_converter import default_image_converter
from keras_aim.models.aim.aim_image_converter import load_image_converter
from keras_aim.models.aim.aim_presets import DEFAULT_IMAGE_SHAPE
from keras_aim.models.quantization import preset_dtype
from keras_aim.utils import io_utils
from keras_aim.utils.validation import reject_task_args
from keras_aim.version import __version__

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
SHARDED_WEIGHTS_FILE = "model.weights.json"
METADATA_FILE = "metadata.json"
SHARD_THRESHOLD_BYTES = 2 * 1024**3
SHARD_SIZE_GB = 2
# The AIMv2 LiT tokenizer's file (keras_aim.AIMv2Tokenizer).
TOKENIZER_FILE = "tokenizer.json"


class PresetLoader:
    """A source that `from_preset` reads (keras-hub's `PresetLoader`).

    One subclass per source: `KerasPresetLoader` (a folder written by
    `save_to_preset`), and in `keras_aim.convert.loaders` the
    `ReleasedCheckpointLoader` (a released hub folder or `.pth` pair,
    converted on the fly) and the `BuiltinPresetLoader` (a preset name).
    `keras_aim.convert.loaders.get_preset_loader(preset)` picks one. Loaders
    receive the class to build and never import the models.
    """

    def load_backbone(self, cls, load_weights=True, **kwargs):
        """An instance of the backbone class `cls`; `kwargs` override its
        constructor arguments (`image_shape`, `dtype`, ...)."""
        raise NotImplementedError(
            f"{type(self).__name__} does not load backbones."
        )

    def load_task(self, cls, load_weights=True, **kwargs):
        """An instance of the task class `cls`, built on `cls.backbone_cls`;
        `kwargs` override (`probe_layers`, `num_classes`, ...)."""
        raise NotImplementedError(f"{type(self).__name__} does not load tasks.")

    def load_lit(self, cls, load_weights=True, **kwargs):
        """An instance of the image-text class `cls` (`AIMv2LiT`), built on
        `cls.image_encoder_cls` and `cls.text_encoder_cls`, with a
        `cls.tokenizer_cls` where the preset has tokenizer files."""
        raise ValueError(
            f"This preset ({type(self).__name__}) holds no image-text (LiT) "
            "model; the AIMv2 LiT preset is 'aimv2_large_patch14_224_lit' (or "
            "a folder of it)."
        )

    def load_image_converter(self, image_shape=None):
        """The evaluation transform that travels with this preset."""
        return default_image_converter(image_shape or DEFAULT_IMAGE_SHAPE)

    def backbone_class(self):
        """The registered backbone class this preset holds, or `None`.

        Looked up in the Keras registry by name, so that a loader never
        imports the models; `Backbone.from_preset` builds it, and a task
        loaded from the preset is built around it.
        """
        return None


def registered_class(name):
    """The class registered as `keras_aim>name`, or `None`."""
    return keras.saving.get_registered_object(f"keras_aim>{name}")


class KerasPresetLoader(PresetLoader):
    """A Keras preset folder written by `save_to_preset`.

    A backbone can be loaded from a backbone preset or from a task preset
    (the saved task is rebuilt around it, through the Keras registry, to
    read the weights, then its backbone is returned).
    """

    def __init__(self, folder, config):
        self.folder = folder
        self.config = config
        self.inner = dict(config["config"])
        backbone = self.inner.get("backbone")
        self.is_task = isinstance(backbone, dict)
        self.backbone_config = dict(
            backbone["config"] if self.is_task else self.inner
        )

    def backbone_class(self):
        if self.is_task:
            name = self.inner["backbone"].get("registered_name")
            return keras.saving.get_registered_object(name) if name else None
        return self._saved_class()

    def _backbone_config(self, kwargs):
        config = dict(self.backbone_config)
        if "image_shape" in kwargs:
            config["image_shape"] = kwargs.pop("image_shape")
        # A quantized preset keeps its per-layer policies (see
        # keras_aim.models.quantization); a `dtype` override is the float
        # dtype they compute in.
        dtype = preset_dtype(config.get("dtype"), kwargs.pop("dtype", None))
        if dtype is not None:
            config["dtype"] = dtype
        return config

    def _task_dtype(self, override):
        return preset_dtype(self.inner.get("dtype"), override)

    def load_backbone(self, cls, load_weights=True, **kwargs):
        reject_task_args(cls, kwargs)
        dtype = kwargs.get("dtype")
        config = self._backbone_config(kwargs)
        config.update(kwargs)
        backbone = cls.from_config(config)
        if load_weights:
            if self.is_task:
                task_cls = self._saved_class()
                config = {**self.inner, "backbone": backbone}
                config.pop("image_converter", None)
                config["dtype"] = self._task_dtype(dtype)
                self._load_weights(task_cls.from_config(config))
            else:
                self._load_weights(backbone)
        return backbone

    def load_task(self, cls, load_weights=True, **kwargs):
        if not self.is_task:
            raise ValueError(
                f"{self.folder!r} holds a backbone without a classification "
                "head; build AIMImageClassifier(backbone, num_classes=...) to "
                "train a new head."
            )
        kwargs = dict(kwargs)
        dtype = self._task_dtype(kwargs.get("dtype"))
        backbone_cls = self.backbone_class() or cls.backbone_cls
        backbone = backbone_cls.from_config(self._backbone_config(kwargs))
        weight_args = [
            k for k in getattr(cls, "preset_weight_args", ()) if k in self.inner
        ]
        for key in weight_args:
            kwargs.setdefault(key, self.inner[key])
        if kwargs.get("num_classes") == self.inner.get("num_classes"):
            # Label names belong to the saved head's classes only.
            for key in getattr(cls, "preset_config_args", ()):
                if key in self.inner:
                    kwargs.setdefault(key, self.inner[key])
        if "image_converter" not in kwargs:
            kwargs["image_converter"] = self.load_image_converter()
        model = cls(backbone, dtype=dtype, **kwargs)
        if load_weights:
            # The saved config holds the resolved values (e.g. block lists).
            for key in weight_args:
                got, want = getattr(model, key), self.inner[key]
                if got != want:
                    raise ValueError(
                        f"The weights in {self.folder!r} were trained with "
                        f"{key}={want!r}; got {key}={kwargs[key]!r}, which "
                        f"gives {got!r}. Load with load_weights=False to "
                        "train a new head."
                    )
            self._load_weights(model)
        return model

    def load_image_converter(self, image_shape=None):
        return load_image_converter(self.folder)

    def load_lit(self, cls, load_weights=True, **kwargs):
        saved = self._saved_class()
        if not issubclass(saved, cls):
            raise ValueError(
                f"{self.folder!r} holds a {saved.__name__}, not an "
                f"{cls.__name__}; load it with keras_aim.{saved.__name__}"
                ".from_preset."
            )
        kwargs = dict(kwargs)
        image_shape = kwargs.pop("image_shape", None)
        dtype = kwargs.pop("dtype", None)
        if kwargs:
            raise ValueError(
                f"{cls.__name__}.from_preset takes the overrides image_shape "
                f"and dtype; got {sorted(kwargs)}."
            )
        config = copy.deepcopy(self.inner)
        if image_shape is not None:
            config["image_encoder"]["config"]["image_shape"] = image_shape
        if dtype is not None:
            for key in ("image_encoder", "text_encoder"):
                config[key]["config"]["dtype"] = dtype
            config["dtype"] = dtype
        model = cls.from_config(config)
        if load_weights:
            self._load_weights(model)
        if cls.tokenizer_cls.has_files(self.folder):
            model.tokenizer = cls.tokenizer_cls.from_folder(self.folder)
        return model

    def _saved_class(self):
        name = self.config.get("registered_name")
        cls = keras.saving.get_registered_object(name) if name else None
        if cls is None:
            raise ValueError(
                f"{self.folder!r} holds a {self.config['class_name']!r}, "
                "which is not a registered keras_aim model."
            )
        return cls

    def _load_weights(self, model):
        path = os.path.join(self.folder, SHARDED_WEIGHTS_FILE)
        if not os.path.exists(path):
            path = os.path.join(self.folder, WEIGHTS_FILE)
        if not os.path.exists(path):
            raise ValueError(
                f"{self.folder!r} has no weights ({WEIGHTS_FILE} or "
                f"{SHARDED_WEIGHTS_FILE}); use load_weights=False for the "
                "architecture only."
            )
        for name in sorted(os.listdir(self.folder)):
            if _preset_file(name) and ".weights." in name:
                io_utils.check_regular_file(
                    os.path.join(self.folder, name), what="Preset weights"
                )
        try:
            model.load_weights(path)
        except Exception as error:
            raise ValueError(
                f"Could not load weights from {path!r}: {error}"
            ) from error


def save_preset(model, preset_dir):
    """Writes `model` into the Keras preset folder `preset_dir`, atomically.

    Everything is written to a temporary folder beside `preset_dir` and
    renamed into place, so a failure midway leaves the previous preset (if
    any) intact. A folder holding files that are not part of a preset is
    refused rather than replaced.
    """
    preset_dir = check_preset_target(preset_dir)
    try:
        os.makedirs(os.path.dirname(preset_dir), exist_ok=True)
        if os.path.exists(preset_dir) and not os.path.isdir(preset_dir):
            raise NotADirectoryError(f"{preset_dir} is a file")
        if not os.access(os.path.dirname(preset_dir), os.W_OK):
            raise PermissionError("the parent folder is not writable")
    except OSError as error:
        raise ValueError(
            f"Cannot create the preset folder {preset_dir!r}: {error}"
        ) from error
    config = {
        "module": "keras_aim",
        "class_name": type(model).__name__,
        "registered_name": f"keras_aim>{type(model).__name__}",
        "config": model.get_config(),
    }
    num_bytes = sum(_variable_bytes(v) for v in model.weights)
    with io_utils.atomic_folder(preset_dir) as folder:
        io_utils.write_json(os.path.join(folder, CONFIG_FILE), config, 2)
        if num_bytes > SHARD_THRESHOLD_BYTES:
            model.save_weights(
                os.path.join(folder, SHARDED_WEIGHTS_FILE),
                max_shard_size=SHARD_SIZE_GB,
            )
        else:
            model.save_weights(os.path.join(folder, WEIGHTS_FILE))
        converter = getattr(model, "image_converter", None)
        if converter is not None:
            converter.save_to_preset(folder)
        tokenizer = getattr(model, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.save_to_preset(folder)
        metadata = {
            "keras_aim_version": __version__,
            "keras_version": keras.__version__,
            "parameter_count": int(model.count_params()),
            "date_saved": datetime.datetime.now().strftime("%Y-%m-%d@%H:%M"),
        }
        io_utils.write_json(os.path.join(folder, METADATA_FILE), metadata, 2)


def check_preset_target(preset_dir):
    """Refuses a `save_preset` target holding files that are not part of a
    preset (they would be lost); returns the absolute path.

    Called by `save_preset`, and by the example scripts before any work,
    so that a run never fails at its end on the folder it writes.
    """
    preset_dir = os.path.abspath(os.fspath(preset_dir))
    if os.path.isdir(preset_dir):
        foreign = sorted(
            n for n in os.listdir(preset_dir) if not _preset_file(n)
        )
        if foreign:
            raise ValueError(
                f"Preset folder {preset_dir!r} holds files that are not part "
                f"of a preset ({foreign[:5]}); save to a new or empty folder."
            )
    return preset_dir


def _preset_file(name):
    files = (CONFIG_FILE, METADATA_FILE, IMAGE_CONVERTER_FILE, TOKENIZER_FILE)
    return name in files or (name.startswith("model") and ".weights." in name)


def _variable_bytes(variable):
    dtype = keras.backend.standardize_dtype(variable.dtype)
    itemsize = 2 if "16" in dtype else 8 if "64" in dtype else 4
    size = 1
    for dim in variable.shape:
        size *= int(dim)
    return size * itemsize
