"""Building Keras models from the authors' released checkpoints.

`ReleasedCheckpointLoader` reads a hub folder (`config.json` +
`model.safetensors`) or a `.pth` pair lazily: the architecture comes from
the tensors' shapes (checked against the hub config), the model class from
the caller (`load_backbone(cls)` / `load_task(cls)`, as the loaders of
`keras_aim.preset_utils`), and the weights are assigned one tensor at a
time. It never imports the models.
"""

import hashlib
import os

from keras_aim.conversion.readers import open_state_dict
from keras_aim.conversion.readers import without_head
from keras_aim.conversion.released import HUB_CONFIG_FILE
from keras_aim.conversion.released import HUB_WEIGHTS_FILE
from keras_aim.conversion.released import check_hub_config
from keras_aim.conversion.released import has_head
from keras_aim.conversion.released import head_file_probe_layers
from keras_aim.conversion.released import hub_architecture
from keras_aim.conversion.released import hub_probe_layers
from keras_aim.conversion.released import infer_config
from keras_aim.conversion.released import load_released_weights
from keras_aim.conversion.released import read_hub_config
from keras_aim.preprocessing import default_image_converter
from keras_aim.presets import NUM_CLASSES
from keras_aim.presets import released_sha256_prefix
from keras_aim.validation import check_num_heads
from keras_aim.validation import reject_task_args


def check_released_sha256(path):
    """Checks a file named as a released `.pth` against its published hash.

    The release's README publishes the first 8 hex digits of each file's
    SHA-256; a download cut short or altered is refused, naming the file.
    Files under other names are not checked.
    """
    prefix = released_sha256_prefix(os.path.basename(os.fspath(path)))
    if prefix is None:
        return
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    actual = digest.hexdigest()
    if not actual.startswith(prefix):
        raise ValueError(
            f"{path} is not the released file of that name: its SHA-256 "
            f"starts {actual[:8]}, the release publishes {prefix}. Download "
            "it again (it may be truncated or altered)."
        )


class ReleasedCheckpointLoader:
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
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"Checkpoint file {path} does not exist."
                )
            check_released_sha256(path)
        probe_layers = head_file_probe_layers(head_path) if head_path else None
        return cls(paths, num_heads=num_heads, probe_layers=probe_layers)

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
            "image_converter", default_image_converter(backbone.image_shape)
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
