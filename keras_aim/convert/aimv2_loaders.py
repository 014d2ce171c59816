"""The preset loaders of the AIMv2 family (see `keras_aim.convert.loaders`).

`AIMv2CheckpointLoader` reads an AIMv2 hub folder (`config.json` +
`model.safetensors`) in either key layout, lazily: the architecture comes
from the tensors' shapes (checked against the config), the head count from
an override, the config or the preset, and the tensors are assigned one at
a time; a LiT checkpoint (image and text towers) also builds an
`AIMv2LiT`, with the folder's tokenizer. `BuiltinAIMv2Loader` serves the
preset names, fetching the hub revision the release pins. Neither imports
the models: the classes come from the caller or the Keras registry.
"""

import os

from keras_aim.convert import released_aimv2
from keras_aim.convert import released_aimv2_lit
from keras_aim.convert.readers import open_state_dict
from keras_aim.convert.released_aim import HUB_CONFIG_FILE
from keras_aim.convert.released_aim import HUB_WEIGHTS_FILE
from keras_aim.convert.released_aim import read_hub_config
from keras_aim.models.aim.aim_image_converter import default_image_converter
from keras_aim.models.aimv2.aimv2_presets import PRESETS
from keras_aim.utils.preset_utils import PresetLoader
from keras_aim.utils.preset_utils import registered_class
from keras_aim.utils.validation import check_num_heads
from keras_aim.utils.validation import reject_task_args

BACKBONE_CLASS = "AIMv2Backbone"
# Every released AIMv2 trunk has 128-wide heads.
RELEASED_HEAD_DIM = 128
# The files a LiT folder may hold beside its weights (CLIP's BPE).
TOKENIZER_FILES = ["tokenizer.json", "vocab.json", "merges.txt"]
LIT_OVERRIDES = ("image_shape", "dtype")


def released_num_heads(hidden_dim):
    """The head count of a released AIMv2 width, or `None`."""
    widths = {s["backbone"]["hidden_dim"] for s in PRESETS.values()}
    return hidden_dim // RELEASED_HEAD_DIM if hidden_dim in widths else None


class AIMv2CheckpointLoader(PresetLoader):
    """An AIMv2 hub folder, in the release's or transformers' key layout.

    Args:
        path: the `model.safetensors` file.
        hub_config: the folder's `config.json` as a dict, or `None`.
        where: the config's path (for messages).
        num_heads: default head count (a preset's), or `None`.
    """

    def __init__(self, path, hub_config=None, where=None, num_heads=None):
        self.paths = [os.fspath(path)]
        self.folder = os.path.dirname(self.paths[0]) or "."
        self.hub_config = hub_config or {}
        self.where = where or "the hub config"
        heads, size, epsilon = released_aimv2.hub_settings(
            self.hub_config, self.where
        )
        self.num_heads = num_heads if num_heads is not None else heads
        self.image_size = size
        self.layer_norm_epsilon = epsilon

    @classmethod
    def from_hub_folder(cls, folder, config=None, num_heads=None):
        folder = os.fspath(folder)
        if config is None:
            config = read_hub_config(folder)
        return cls(
            os.path.join(folder, HUB_WEIGHTS_FILE),
            hub_config=config,
            where=os.path.join(folder, HUB_CONFIG_FILE),
            num_heads=num_heads,
        )

    def backbone_class(self):
        return registered_class(BACKBONE_CLASS)

    def architecture(self, reader):
        """The architecture of the tensors, checked against the config."""
        architecture = released_aimv2.infer_architecture(reader)
        released_aimv2.check_hub_config(
            self.hub_config, architecture, self.where
        )
        return architecture

    def load_backbone(self, cls, load_weights=True, **kwargs):
        reject_task_args(cls, kwargs)
        if not load_weights and not os.path.isfile(self.paths[0]):
            architecture = released_aimv2.hub_architecture(
                self.hub_config, self.where
            )
            return self._backbone(cls, architecture, kwargs)
        with open_state_dict(*self.paths) as reader:
            architecture = self.architecture(reader)
            backbone = self._backbone(cls, architecture, kwargs)
            if load_weights:
                released_aimv2.load_aimv2_weights(
                    backbone,
                    reader,
                    architecture["layout"],
                    architecture["prefix"],
                )
        return backbone

    def load_task(self, cls, load_weights=True, **kwargs):
        if load_weights:
            raise ValueError(
                f"{self.paths[0]} is an AIMv2 trunk without a classification "
                "head; build AIMImageClassifier(AIMv2Backbone.from_preset(...)"
                ", num_classes=...) to train one (examples/probe.py does)."
            )
        kwargs = dict(kwargs)
        backbone_kwargs = {
            k: kwargs.pop(k) for k in ("image_shape", "dtype") if k in kwargs
        }
        backbone = self.load_backbone(
            self.backbone_class(), False, **backbone_kwargs
        )
        kwargs.setdefault(
            "image_converter", self.load_image_converter(backbone.image_shape)
        )
        return cls(backbone, dtype=backbone_kwargs.get("dtype"), **kwargs)

    def load_lit(self, cls, load_weights=True, **kwargs):
        overrides = _lit_overrides(cls, kwargs)
        if not load_weights and not os.path.isfile(self.paths[0]):
            image = released_aimv2.hub_architecture(self.hub_config, self.where)
            text = released_aimv2_lit.text_architecture_from_config(
                self.hub_config, self.where
            )
            return self._lit(cls, image, text, overrides)
        with open_state_dict(*self.paths) as reader:
            image = self.architecture(reader)
            if not image["prefix"]:
                raise ValueError(
                    f"{self.paths[0]} is an AIMv2 image trunk without a text "
                    "tower (no 'image_encoder.' or 'vision_model.' LiT keys); "
                    "load it with keras_aim.AIMv2Backbone.from_preset."
                )
            layout = image["layout"]
            text = released_aimv2_lit.infer_text_architecture(reader, layout)
            released_aimv2_lit.check_text_config(
                self.hub_config, text, self.where
            )
            model = self._lit(cls, image, text, overrides)
            if load_weights:
                released_aimv2_lit.load_lit_weights(model, reader, layout)
        return model

    def _lit(self, cls, image, text, overrides):
        """An `AIMv2LiT` of these architectures (random weights)."""
        where = f"{self.where} (text_config)"
        config = released_aimv2_lit.text_config(self.hub_config)
        heads, _, epsilon = released_aimv2.hub_settings(config, where)
        _, eos, max_scale = released_aimv2_lit.text_settings(
            self.hub_config, self.where
        )
        tokenizer = None
        if cls.tokenizer_cls.has_files(self.folder):
            tokenizer = cls.tokenizer_cls.from_folder(
                self.folder, text["max_sequence_length"]
            )
        if eos is None:
            eos = tokenizer.end_token_id if tokenizer else None
        if heads is None:
            heads = released_aimv2_lit.released_text_heads(text["hidden_dim"])
        if heads is None:
            raise ValueError(
                f"The text tower's head count is not in the tensors: "
                f"{self.where} must give text_config.num_attention_heads."
            )
        if eos is None:
            eos = released_aimv2_lit.released_eos_token_id()
        dtype = overrides.get("dtype")
        image_encoder = self._backbone(
            cls.image_encoder_cls,
            image,
            dict(overrides, name="image_encoder"),
        )
        text_encoder = cls.text_encoder_cls(
            vocabulary_size=text["vocabulary_size"],
            hidden_dim=text["hidden_dim"],
            num_layers=text["num_layers"],
            num_heads=check_num_heads(
                heads, text["hidden_dim"], "text_config.num_attention_heads"
            ),
            intermediate_dim=text["intermediate_dim"],
            max_sequence_length=text["max_sequence_length"],
            eos_token_id=eos,
            layer_norm_epsilon=epsilon or image_encoder.layer_norm_epsilon,
            dtype=dtype,
            name="text_encoder",
        )
        return cls(
            image_encoder,
            text_encoder,
            projection_dim=text["projection_dim"],
            max_logit_scale=max_scale or 100.0,
            image_converter=self.load_image_converter(
                image_encoder.image_shape
            ),
            tokenizer=tokenizer,
            dtype=dtype,
        )

    def _backbone(self, cls, architecture, kwargs):
        kwargs = dict(kwargs)
        num_heads = kwargs.pop("num_heads", None)
        for value in (
            self.num_heads,
            released_num_heads(architecture["hidden_dim"]),
        ):
            if num_heads is None:
                num_heads = value
        num_heads = check_num_heads(num_heads, architecture["hidden_dim"])
        image_shape = kwargs.pop("image_shape", None)
        if image_shape is None:
            grid = architecture["position_grid_size"]
            size = self.image_size
            if size is None:
                size = grid[0] * architecture["patch_size"] if grid else 224
            image_shape = (size, size, architecture["num_channels"])
        if self.layer_norm_epsilon is not None:
            kwargs.setdefault("layer_norm_epsilon", self.layer_norm_epsilon)
        return cls(
            image_shape=tuple(image_shape),
            patch_size=architecture["patch_size"],
            hidden_dim=architecture["hidden_dim"],
            num_layers=architecture["num_layers"],
            num_heads=num_heads,
            intermediate_dim=architecture["intermediate_dim"],
            position_embedding=architecture["position_embedding"],
            position_grid_size=architecture["position_grid_size"],
            **kwargs,
        )


class BuiltinAIMv2Loader(PresetLoader):
    """An AIMv2 preset name: the architecture from `PRESETS`, the weights
    from the hub revision the release pins."""

    def __init__(self, name):
        self.name = name
        self.spec = PRESETS[name]

    def backbone_class(self):
        return registered_class(BACKBONE_CLASS)

    def load_backbone(self, cls, load_weights=True, **kwargs):
        reject_task_args(cls, kwargs)
        if load_weights:
            return self._hub_loader().load_backbone(cls, True, **kwargs)
        config = dict(self.spec["backbone"])
        config.update(kwargs)
        return cls(**config)

    def load_task(self, cls, load_weights=True, **kwargs):
        if load_weights:
            raise ValueError(
                f"{self.name!r} is an AIMv2 trunk without a classification "
                "head; build AIMImageClassifier(AIMv2Backbone.from_preset("
                f"{self.name!r}), num_classes=...) to train one."
            )
        kwargs = dict(kwargs)
        backbone_kwargs = {
            k: kwargs.pop(k) for k in ("image_shape", "dtype") if k in kwargs
        }
        backbone = self.load_backbone(
            self.backbone_class(), False, **backbone_kwargs
        )
        kwargs.setdefault(
            "image_converter", default_image_converter(backbone.image_shape)
        )
        return cls(backbone, dtype=backbone_kwargs.get("dtype"), **kwargs)

    def load_image_converter(self, image_shape=None):
        shape = image_shape or self.spec["backbone"]["image_shape"]
        return default_image_converter(shape)

    def load_lit(self, cls, load_weights=True, **kwargs):
        lit = self.spec.get("lit")
        if lit is None:
            names = [n for n, s in PRESETS.items() if "lit" in s]
            raise ValueError(
                f"{self.name!r} is an AIMv2 image trunk without a text tower; "
                f"AIMv2LiT presets: {', '.join(names)}."
            )
        overrides = _lit_overrides(cls, kwargs)
        if load_weights:
            return self._hub_loader().load_lit(cls, True, **overrides)
        dtype = overrides.get("dtype")
        config = dict(self.spec["backbone"])
        config.update(overrides)
        image_encoder = cls.image_encoder_cls(**config, name="image_encoder")
        text_encoder = cls.text_encoder_cls(
            **lit["text"], dtype=dtype, name="text_encoder"
        )
        return cls(
            image_encoder,
            text_encoder,
            projection_dim=lit["projection_dim"],
            max_logit_scale=lit["max_logit_scale"],
            image_converter=default_image_converter(image_encoder.image_shape),
            dtype=dtype,
        )

    def _hub_loader(self):
        folder = download_revision(
            self.spec["hub_repo"],
            self.spec["revision"],
            self.name,
            TOKENIZER_FILES if "lit" in self.spec else [],
        )
        return AIMv2CheckpointLoader.from_hub_folder(
            folder, num_heads=self.spec["backbone"]["num_heads"]
        )


def _lit_overrides(cls, kwargs):
    """The constructor overrides `AIMv2LiT.from_preset` takes."""
    extra = sorted(set(kwargs) - set(LIT_OVERRIDES))
    if extra:
        raise ValueError(
            f"{cls.__name__}.from_preset takes the overrides "
            f"{', '.join(LIT_OVERRIDES)}; got {extra}."
        )
    return {k: v for k, v in kwargs.items() if v is not None}


def download_revision(repo_id, revision, what, extra_files=()):
    """Downloads one revision of a hub repository; returns its folder."""
    try:
        import huggingface_hub

        return huggingface_hub.snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=[HUB_CONFIG_FILE, HUB_WEIGHTS_FILE, *extra_files],
        )
    except Exception as error:  # Import, network and hub errors vary.
        raise ValueError(
            f"Could not fetch {what!r} from the Hugging Face hub repo "
            f"{repo_id!r} at revision {revision} ({type(error).__name__}: "
            f"{error}). Without a network, copy that repository's "
            "config.json and model.safetensors to this machine and call "
            "from_preset('/path/to/folder'), or convert them with `python -m "
            "keras_aim.convert FOLDER --output PRESET`."
        ) from error
