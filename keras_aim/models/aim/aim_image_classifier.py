"""AIM image classifier: the trunk plus the released attentive probe."""

import collections

import keras
import numpy as np

from keras_aim.layers.attentive_probe import AIMAttentivePooling
from keras_aim.layers.linear_probe import AIMLinearProbe
from keras_aim.models.aim.aim_backbone import AIMBackbone
from keras_aim.models.aim.aim_presets import best_probe_layers
from keras_aim.models.backbone import Backbone
from keras_aim.models.task import Task
from keras_aim.utils import validation

PROBES = ("attentive", "linear")


def resolve_probe_layers(probe_layers, backbone):
    """Turns `"best"`, `"last"` or indices into sorted 0-based blocks.

    `"best"` exists for the released AIM sizes only (AIMv2 publishes no
    probe blocks; an AIMv2 trunk of an AIM size does not get them).
    """
    best = None
    if isinstance(backbone, AIMBackbone):
        best = best_probe_layers(
            backbone.patch_size,
            backbone.hidden_dim,
            backbone.num_layers,
            backbone.num_heads,
        )
    return validation.resolve_probe_layers(
        probe_layers, backbone.num_layers, best
    )


def check_class_names(class_names, num_classes):
    """`None`, or `num_classes` distinct non-empty strings (as a list)."""
    if class_names is None:
        return None
    if isinstance(class_names, (str, bytes)) or not isinstance(
        class_names, (list, tuple)
    ):
        raise ValueError(
            "`class_names` must be a list of strings (one per class) or None; "
            f"got {type(class_names).__name__}."
        )
    names = list(class_names)
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise ValueError(
            f"`class_names` must be non-empty strings; got {bad[:3]!r}."
        )
    if len(names) != num_classes:
        raise ValueError(
            f"`class_names` has {len(names)} names but num_classes="
            f"{num_classes}; give one name per class."
        )
    if len(set(names)) != len(names):
        twice = sorted(
            n for n, c in collections.Counter(names).items() if c > 1
        )
        raise ValueError(f"`class_names` names {twice[:3]} more than once.")
    return names


@keras.saving.register_keras_serializable(package="keras_aim")
class AIMImageClassifier(Task, keras.Model):
    """AIM backbone with the attentive-probe head of the release.

    The raw outputs of the `probe_layers` blocks are averaged and pooled by
    `keras_aim.layers.AIMAttentivePooling` (BatchNorm without scale/offset,
    one learned query, bias-free key/value projections and classifier), as
    in El-Nouby et al. (ICML 2024), or, with `probe="linear"`, mean-pooled
    into `keras_aim.layers.AIMLinearProbe` (BatchNorm, linear layer). Blocks
    after the deepest probed one are not computed. `predict` also accepts
    raw `uint8` images, which then go through `image_converter` first.

    Args:
        backbone: a `keras_aim.AIMBackbone` or `keras_aim.AIMv2Backbone`.
        num_classes: int. Defaults to 1000.
        probe_layers: `"best"` (released sizes only), `"last"` (the last six
            blocks) or a list of 0-based block indices. Defaults to `"best"`
            for released sizes and `"last"` otherwise.
        image_converter: optional `keras_aim.AIMImageConverter` used by
            `predict` for raw images and saved with the preset.
        probe: `"attentive"` (the release's head) or `"linear"`. Defaults to
            `"attentive"`.
        dtype: dtype or `keras.DTypePolicy` of the head.
        class_names: optional list of `num_classes` distinct strings, the
            name of each label (saved with the preset; `examples/evaluate.py`
            maps an image folder's class sub-folders by them). Defaults to
            `None` (unnamed labels, as in the released presets).
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    >>> backbone = keras_aim.AIMBackbone(image_shape=(28, 28, 3),
    ...     patch_size=4, hidden_dim=48, num_layers=3, num_heads=2)
    >>> classifier = keras_aim.AIMImageClassifier(backbone, num_classes=10,
    ...                                           probe_layers=[1, 2])
    >>> tuple(classifier(keras.ops.zeros((2, 28, 28, 3))).shape)
    (2, 10)
    """

    backbone_cls = AIMBackbone
    # Constructor arguments the saved head's weights depend on.
    preset_weight_args = ("num_classes", "probe_layers", "probe")
    # Saved with the preset and restored by `from_preset` (no weights).
    preset_config_args = ("class_names",)
    nested_config_objects = ("backbone", "image_converter")

    def __init__(
        self,
        backbone,
        num_classes=1000,
        probe_layers=None,
        image_converter=None,
        probe="attentive",
        dtype=None,
        class_names=None,
        **kwargs,
    ):
        validation.check_model_kwargs(type(self), kwargs)
        if not isinstance(backbone, Backbone):
            raise ValueError(
                "`backbone` must be a keras_aim.AIMBackbone or AIMv2Backbone; "
                "got "
                f"{type(backbone).__name__}."
            )
        if probe_layers is None:
            try:
                layers = resolve_probe_layers("best", backbone)
            except ValueError:
                layers = resolve_probe_layers("last", backbone)
        else:
            layers = resolve_probe_layers(probe_layers, backbone)
        # === Layers ===
        if probe not in PROBES:
            raise ValueError(
                f"`probe` must be one of {PROBES}; got probe={probe!r}."
            )
        num_classes = validation.check_size_limit(
            validation.positive_int(num_classes, "num_classes"), "num_classes"
        )
        class_names = check_class_names(class_names, num_classes)
        head_dtype = dtype if dtype is not None else backbone.dtype_policy
        if probe == "attentive":
            probe_head = AIMAttentivePooling(
                hidden_dim=backbone.hidden_dim,
                num_heads=backbone.num_heads,
                num_classes=num_classes,
                dtype=head_dtype,
                name="probe_head",
            )
        else:
            probe_head = AIMLinearProbe(
                hidden_dim=backbone.hidden_dim,
                num_classes=num_classes,
                dtype=head_dtype,
                name="probe_head",
            )

        # === Functional model ===
        images = keras.Input(shape=backbone.image_shape, name="images")
        features = backbone.extract_features(images, layers)
        logits = probe_head(features)
        super().__init__(inputs=images, outputs=logits, dtype=dtype, **kwargs)
        self._keep_dtype_policy(
            dtype if dtype is not None else backbone.dtype_policy
        )
        self.backbone = backbone
        self.probe_head = probe_head
        self.image_converter = image_converter

        # === Config ===
        self.num_classes = num_classes
        self.probe_layers = layers
        self.probe = probe
        self.class_names = class_names

    def __call__(self, images, *args, **kwargs):
        if not isinstance(images, dict):
            self.backbone.check_images(images)
        return super().__call__(images, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        """Like `keras.Model.predict`; raw `uint8` images are converted first.

        Integer arrays (e.g. decoded JPEGs of any size) go through
        `image_converter` (resize, center crop, ImageNet normalisation);
        float arrays are taken as already normalised.
        """
        array = x if isinstance(x, np.ndarray) else None
        if array is not None and np.issubdtype(array.dtype, np.integer):
            if self.image_converter is None:
                raise ValueError(
                    "Got integer (raw) images but this classifier has no "
                    "`image_converter`; pass normalised float images or build "
                    "it with keras_aim.AIMImageConverter()."
                )
            x = keras.ops.convert_to_numpy(self.image_converter(array))
        return super().predict(x, *args, **kwargs)

    def get_config(self):
        config = {
            **self._base_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "probe_layers": list(self.probe_layers),
            "probe": self.probe,
        }
        if self.image_converter is not None:
            config["image_converter"] = keras.saving.serialize_keras_object(
                self.image_converter
            )
        if self.class_names is not None:
            config["class_names"] = list(self.class_names)
        return config
