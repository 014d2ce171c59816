"""Building Keras models from the authors' released checkpoints.

`ReleasedCheckpointLoader` reads a hub folder (`config.json` +
`model.safetensors`) or a `.pth` pair lazily: the architecture comes from
the tensors' shapes (checked against the hub config), the model class from
the caller (`load_backbone(cls)` / `load_task(cls)`, as the loaders of
`keras_aim.utils.preset_utils`), and the weights are assigned one tensor at a
time. It never imports the models.
"""

import hashlib
import os

from keras_aim.convert.aimv2_loaders import AIMv2CheckpointLoader
from keras_aim.convert.aimv2_loaders import BuiltinAIMv2Loader
from keras_aim.convert.readers import open_state_dict
from keras_aim.convert.readers import without_head
from keras_aim.convert.released_aim import HUB_CONFIG_FILE
from keras_aim.convert.released_aim import HUB_WEIGHTS_FILE
from keras_aim.convert.released_aim import check_hub_config
from keras_aim.convert.released_aim import has_head
from keras_aim.convert.released_aim import head_file_probe_layers
from keras_aim.convert.released_aim import hub_architecture
from keras_aim.convert.released_aim import hub_probe_layers
from keras_aim.convert.released_aim import infer_config
from keras_aim.convert.released_aim import load_released_weights
from keras_aim.convert.released_aim import read_hub_config
from keras_aim.convert.released_aimv2 import is_aimv2_config
from keras_aim.models.aim.aim_image_converter import default_image_converter
from keras_aim.models.aim.aim_presets import DEFAULT_IMAGE_SHAPE
from keras_aim.models.aim.aim_presets import NUM_CLASSES
from keras_aim.models.aim.aim_presets import PRESETS
from keras_aim.models.aim.aim_presets import PTH_REPO
from keras_aim.models.aim.aim_presets import check_preset_name
from keras_aim.models.aim.aim_presets import released_sha256_prefix
from keras_aim.models.aimv2 import aimv2_presets
from keras_aim.utils import io_utils
from keras_aim.utils.preset_utils import CONFIG_FILE
from keras_aim.utils.preset_utils import KerasPresetLoader
from keras_aim.utils.preset_utils import PresetLoader
from keras_aim.utils.preset_utils import registered_class
from keras_aim.utils.validation import backbone_parameter_count
from keras_aim.utils.validation import check_num_heads
from keras_aim.utils.validation import reject_task_args


def check_released_sha256(path):
    """Checks a file named as a released `.pth` against its published hash.

    The release's README publishes the first 8 hex digits of each file's
    SHA-256; a download cut short or altered is refused, naming the file.
    Files under other names are not checked.
    """
    name = os.path.basename(os.fspath(path))
    prefix = released_sha256_prefix(name)
    if prefix is None:
        return
    size = io_utils.check_regular_file(path, what="Checkpoint file")
    limit = released_max_bytes(name)
    if size > limit:  # refused from its size, before hashing gigabytes
        raise ValueError(
            f"{path} is not the released file of that name: it is "
            f"{size:,} bytes, more than its tensors can take ({limit:,} at "
            f"most); the release publishes SHA-256 {prefix}."
        )
    digest = hashlib.sha256()
    with io_utils.open_regular(path, what="Checkpoint file") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    actual = digest.hexdigest()
    if not actual.startswith(prefix):
        raise ValueError(
            f"{path} is not the released file of that name: its SHA-256 "
            f"starts {actual[:8]}, the release publishes {prefix}. Download "
            "it again (it may be truncated or altered)."
        )


def released_max_bytes(filename):
    """An upper bound on the size of a released `.pth`, from its preset.

    float32 tensors of the backbone (or of a head: key and value
    projections, the 1000-class classifier, the query and the BatchNorm
    statistics), plus a tenth and a megabyte for the pickle.
    """
    for spec in PRESETS.values():
        if not filename.startswith(spec["pth_prefix"] + "_"):
            continue
        arch = spec["backbone"]
        width = arch["hidden_dim"]
        if filename.endswith("_backbone.pth"):
            count = backbone_parameter_count(
                arch["patch_size"], width, arch["num_layers"]
            )
        else:
            count = 2 * width * width + NUM_CLASSES * width + 4 * width
        return int(4 * count * 1.1) + (1 << 20)
    return None


class ReleasedCheckpointLoader(PresetLoader):
    """Released checkpoints: a hub folder or a `.pth` pair, read lazily.

    The architecture comes from the tensors' shapes (checked against the
    hub `config.json`); the number of heads from `num_heads`, a
    `num_heads=` override or the hub config. Tensors are read, cast and
    assigned one at a time, so no float32 copy is made for bfloat16.

    Args:
        paths: the checkpoint files (`model.safetensors`, or a backbone
            `.pth` and an optional head `.pth`).
        hub_config: the hub `config.json` as a dict, or `None`.
        where: the name of the config (for messages).
        num_heads: default head count, or `None`.
        probe_layers: default probe layers (hub config or head file name).
    """

    def __init__(
        self,
        paths,
        hub_config=None,
        where=None,
        num_heads=None,
        probe_layers=None,
    ):
        self.paths = [os.fspath(p) for p in paths]
        self.hub_config = hub_config
        self.where = where
        self.num_heads = num_heads
        self.probe_layers = probe_layers

    @classmethod
    def from_hub_folder(cls, folder, config=None, num_heads=None):
        """A loader for a hub folder (`config.json` + `model.safetensors`)."""
        folder = os.fspath(folder)
        if config is None:
            config = read_hub_config(folder)
        return cls(
            [os.path.join(folder, HUB_WEIGHTS_FILE)],
            hub_config=config,
            where=os.path.join(folder, HUB_CONFIG_FILE),
            num_heads=num_heads or config.get("num_heads"),
            probe_layers=config.get("probe_layers"),
        )

    @classmethod
    def from_pth(cls, backbone_path, head_path=None, num_heads=None):
        """A loader for the released `.pth` files (`apple/AIM` layout)."""
        paths = [backbone_path] + ([head_path] if head_path else [])
        for path in paths:
            io_utils.check_regular_file(path, what="Checkpoint file")
            check_released_sha256(path)
        probe_layers = head_file_probe_layers(head_path) if head_path else None
        return cls(paths, num_heads=num_heads, probe_layers=probe_layers)

    def backbone_class(self):
        return registered_class("AIMBackbone")

    def load_backbone(self, cls, load_weights=True, **kwargs):
        reject_task_args(cls, kwargs)
        if not load_weights and not os.path.isfile(self.paths[0]):
            architecture = hub_architecture(self.hub_config, self.where)
            return self._backbone(cls, architecture, kwargs)
        with open_state_dict(*self.paths) as reader:
            backbone = self._backbone(cls, self._architecture(reader), kwargs)
            if load_weights:
                load_released_weights(backbone, without_head(reader))
        return backbone

    def load_task(self, cls, load_weights=True, **kwargs):
        kwargs = dict(kwargs)
        if not load_weights and not os.path.isfile(self.paths[0]):
            architecture = hub_architecture(self.hub_config, self.where)
            return self._task(cls, architecture, kwargs, None)
        with open_state_dict(*self.paths) as reader:
            architecture = self._architecture(reader)
            if load_weights and not has_head(reader.keys()):
                raise ValueError(
                    f"Checkpoint {reader.path} has no classification head (no "
                    "head.* tensors). Load it with AIMBackbone.from_preset, or "
                    "build AIMImageClassifier(backbone, num_classes=...) to "
                    "train a head."
                )
            return self._task(
                cls, architecture, kwargs, reader if load_weights else None
            )

    def _architecture(self, reader):
        architecture = infer_config(reader)
        if self.hub_config is not None:
            check_hub_config(self.hub_config, architecture, self.where)
        return architecture

    def _image_shape(self, architecture, image_shape):
        if image_shape is not None:
            return tuple(image_shape)
        size = (self.hub_config or {}).get("img_size", 224)
        if not isinstance(size, (list, tuple)):
            size = (size, size)
        ok = len(size) in (1, 2) and all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0
            for v in size
        )
        if not ok:
            raise ValueError(
                f"{self.where} gives img_size={size!r}; expected a positive "
                "int or a [height, width] pair."
            )
        return (size[0], size[-1], architecture["num_channels"])

    def _backbone(self, cls, architecture, kwargs):
        num_heads = kwargs.pop("num_heads", None)
        num_heads = self.num_heads if num_heads is None else num_heads
        num_heads = check_num_heads(num_heads, architecture["hidden_dim"])
        return cls(
            image_shape=self._image_shape(
                architecture, kwargs.pop("image_shape", None)
            ),
            patch_size=architecture["patch_size"],
            hidden_dim=architecture["hidden_dim"],
            num_layers=architecture["num_layers"],
            num_heads=num_heads,
            mlp_ratio=architecture["mlp_ratio"],
            **kwargs,
        )

    def _task(self, cls, architecture, kwargs, reader):
        dtype = kwargs.pop("dtype", None)
        backbone_kwargs = {"dtype": dtype}
        for key in ("image_shape", "num_heads"):
            if key in kwargs:
                backbone_kwargs[key] = kwargs.pop(key)
        backbone = self._backbone(
            cls.backbone_cls, architecture, backbone_kwargs
        )
        saved_classes = architecture["num_classes"]
        num_classes = kwargs.pop("num_classes", None) or saved_classes
        num_classes = NUM_CLASSES if num_classes is None else num_classes
        if reader is not None and num_classes != saved_classes:
            raise ValueError(
                f"The head in {reader.path} has {saved_classes} classes; got "
                f"num_classes={num_classes}."
            )
        probe_layers = kwargs.pop("probe_layers", None)
        if probe_layers is None and (reader is None or has_head(reader.keys())):
            probe_layers = self.probe_layers
        probe_layers = hub_probe_layers(
            probe_layers, architecture["num_layers"]
        )
        kwargs.setdefault(
            "image_converter", self.load_image_converter(backbone.image_shape)
        )
        model = cls(
            backbone,
            num_classes=num_classes,
            probe_layers=probe_layers,
            dtype=dtype,
            **kwargs,
        )
        if reader is not None:
            load_released_weights(model, reader)
        return model


def get_preset_loader(preset):
    """Returns the `PresetLoader` for a preset name, handle or folder."""
    if not isinstance(preset, (str, os.PathLike)):
        raise ValueError(
            "`preset` must be a preset name, an hf:// handle or a folder; got "
            f"{preset!r}."
        )
    preset = os.fspath(preset)
    if os.path.isdir(preset):
        return _folder_loader(preset)
    if preset.startswith("hf://"):
        return _folder_loader(download_hub_repo(preset[len("hf://") :], preset))
    if os.path.exists(preset):
        raise ValueError(
            f"`preset` {preset!r} is a file; pass its folder, or convert "
            "released .pth checkpoints with `python -m keras_aim.convert`."
        )
    if preset in aimv2_presets.PRESETS:
        return BuiltinAIMv2Loader(preset)
    if preset.startswith("aimv2"):
        aimv2_presets.check_preset_name(preset)
    try:
        return BuiltinPresetLoader(check_preset_name(preset))
    except ValueError as error:
        raise ValueError(
            f"{error} AIMv2 presets: {', '.join(aimv2_presets.PRESETS)}."
        ) from None


def _folder_loader(folder):
    config_path = os.path.join(folder, CONFIG_FILE)
    if not os.path.exists(config_path):
        raise ValueError(
            f"{folder!r} is not a preset folder: it has no {CONFIG_FILE}."
        )
    config = io_utils.read_json(config_path, what="Preset config")
    if isinstance(config, dict) and "class_name" in config:
        if isinstance(config.get("config"), dict):
            return KerasPresetLoader(folder, config)
    if isinstance(config, dict) and "embed_dim" in config:
        return ReleasedCheckpointLoader.from_hub_folder(folder, config)
    if is_aimv2_config(config):
        return AIMv2CheckpointLoader.from_hub_folder(folder, config)
    raise ValueError(
        f"{config_path!r} is neither a Keras preset config (class_name + "
        "config), a released AIM config (img_size, patch_size, embed_dim, "
        "num_blocks, num_heads, ...) nor an AIMv2 one (model_type 'aimv2' "
        "or 'aimv2_vision_model', hidden_size, num_hidden_layers, ...)."
    )


class BuiltinPresetLoader(PresetLoader):
    """A built-in name: the architecture from `PRESETS`, weights from the hub.

    `probe_layers="last"` on a task reads the `.pth` pair of `apple/AIM`
    that holds the last-layers head.
    """

    def __init__(self, name):
        self.name = name
        self.spec = PRESETS[name]

    def backbone_class(self):
        return registered_class("AIMBackbone")

    def load_backbone(self, cls, load_weights=True, **kwargs):
        reject_task_args(cls, kwargs)
        if load_weights:
            return self._hub_loader().load_backbone(cls, True, **kwargs)
        config = dict(self.spec["backbone"], image_shape=DEFAULT_IMAGE_SHAPE)
        config.update(kwargs)
        return cls(**config)

    def load_task(self, cls, load_weights=True, **kwargs):
        if load_weights and kwargs.get("probe_layers") == "last":
            return self._pth_loader().load_task(cls, True, **kwargs)
        if load_weights:
            return self._hub_loader().load_task(cls, True, **kwargs)
        kwargs = dict(kwargs)
        image_shape = kwargs.pop("image_shape", DEFAULT_IMAGE_SHAPE)
        dtype = kwargs.pop("dtype", None)
        backbone = cls.backbone_cls(
            **self.spec["backbone"], image_shape=image_shape, dtype=dtype
        )
        kwargs.setdefault("num_classes", NUM_CLASSES)
        kwargs.setdefault("probe_layers", "best")
        kwargs.setdefault(
            "image_converter", default_image_converter(image_shape)
        )
        return cls(backbone, dtype=dtype, **kwargs)

    def _hub_loader(self):
        folder = download_hub_repo(self.spec["hub_repo"], self.name)
        return ReleasedCheckpointLoader.from_hub_folder(
            folder, num_heads=self.spec["backbone"]["num_heads"]
        )

    def _pth_loader(self):
        prefix = self.spec["pth_prefix"]
        names = (f"{prefix}_backbone.pth", f"{prefix}_head_last_layers.pth")
        try:
            import huggingface_hub

            paths = [
                huggingface_hub.hf_hub_download(PTH_REPO, n) for n in names
            ]
        except Exception as error:  # Network and hub errors vary by version.
            raise ValueError(
                f"Could not fetch the 'last layers' head of {self.name!r} from "
                f"{PTH_REPO!r} ({type(error).__name__}: {error}). Without a "
                "network, convert local files with `python -m keras_aim."
                f"convert {names[0]} --head {names[1]} --preset {self.name} "
                "--output FOLDER` and pass FOLDER."
            ) from error
        return ReleasedCheckpointLoader.from_pth(
            *paths, num_heads=self.spec["backbone"]["num_heads"]
        )


def download_hub_repo(repo_id, what):
    """Downloads a Hugging Face hub repository; returns its local folder."""
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
