"""What every keras_aim model shares: config plumbing and presets.

These are mixins rather than a `keras.Model` subclass on purpose: Keras
turns a `keras.Model` subclass that calls `super().__init__(inputs=...,
outputs=...)` into a functional model by rewriting its base classes, so a
common `keras.Model` base would leak the functional machinery into the
subclassed `AIMPretrainer`.
"""

import keras

from keras_aim.convert import loaders
from keras_aim.export import export_lib
from keras_aim.models import quantization
from keras_aim.utils import preset_utils
from keras_aim.utils import validation


class AIMModelBase:
    """Config round trip shared by the AIM models.

    Subclasses list the constructor arguments that hold Keras objects in
    `nested_config_objects` (e.g. `("backbone",)`); `from_config` turns
    their serialized form back into objects, and the dtype policy back
    into a `keras.DTypePolicy`, then calls `cls(**config)`.
    """

    nested_config_objects = ()

    # Every Keras loop refuses empty or raw-pixel input before it starts:
    # on JAX an empty first batch would leave the variables unreadable.
    def _check_inputs(self, x, what="x"):
        validation.check_not_empty(x, what)
        array = validation._first_array(x)
        if array is not None and hasattr(array, "dtype"):
            validation.check_image_values(array, what)

    def fit(self, x=None, *args, **kwargs):
        self._check_inputs(x)
        validation_data = kwargs.get("validation_data")
        if validation_data is not None:
            self._check_inputs(validation_data, "validation_data")
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        self._check_inputs(x)
        return super().evaluate(x, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._check_inputs(x)
        return super().predict(x, *args, **kwargs)

    def train_on_batch(self, x, *args, **kwargs):
        self._check_inputs(x)
        return super().train_on_batch(x, *args, **kwargs)

    def test_on_batch(self, x, *args, **kwargs):
        self._check_inputs(x)
        return super().test_on_batch(x, *args, **kwargs)

    def predict_on_batch(self, x):
        self._check_inputs(x)
        return super().predict_on_batch(x)

    def _keep_dtype_policy(self, dtype):
        # Functional models drop `dtype`; keep it so that `get_config` (and
        # therefore presets) records the policy the layers use.
        if dtype is not None:
            self.dtype_policy = keras.dtype_policies.get(dtype)

    def _base_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "dtype": quantization.dtype_config(self),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for key in cls.nested_config_objects:
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)


class PresetMixin(AIMModelBase):
    """`from_preset` / `save_to_preset` for backbones and tasks.

    A subclass says how a loader builds it in `_from_loader` (keras-hub's
    `load_backbone` / `load_task` split).
    """

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Builds the model from a preset name, handle or folder.

        Args:
            preset: a built-in name (`"aim_600m"`, ..., `"aim_7b"`;
                `"aimv2_large_patch14_224"`, ... for AIMv2), an
                `hf://owner/repo` handle, a Keras preset
                folder written by `save_to_preset`, or a folder in the
                released hub layout (`config.json` + `model.safetensors`),
                converted on the fly.
            load_weights: bool, `False` builds the architecture only.
            **kwargs: constructor overrides such as `image_shape`, `dtype`
                or (classifier) `probe_layers`.

        Example:

        ```python
        backbone = keras_aim.AIMBackbone.from_preset(
            "aim_600m", load_weights=False, image_shape=(None, None, 3)
        )
        ```
        """
        loader = cls._preset_loader(preset)
        return cls._from_loader(loader, load_weights, **kwargs)

    @staticmethod
    def _preset_loader(preset):
        return loaders.get_preset_loader(preset)

    @classmethod
    def _from_loader(cls, loader, load_weights, **kwargs):
        raise NotImplementedError

    # Keras' `Layer.__new__` puts a wrapper of `quantize` on each instance
    # that checks the mode against Keras' list (which has "gptq" and
    # "awq") before calling it; `quantize` is a property so that the
    # assignment lands here and keras_aim's own checks answer instead.
    @property
    def quantize(self):
        """`quantize(mode, config=None, filters=None)`: see `_quantize`."""
        return self._quantize

    @quantize.setter
    def quantize(self, keras_wrapper):
        del keras_wrapper

    def _quantize(self, mode=None, config=None, filters=None, **kwargs):
        """Quantizes every projection with Keras' quantized `Dense`.

        Each `AIMDense` (attention and MLP projections, probe key, value
        and classifier) gets Keras' `"int8"`, `"int4"` or `"float8"`
        kernel; the patch-embedding conv, the norms and the position table
        stay float. For inference and QLoRA (`enable_lora` after
        `quantize`); `.keras` files and presets reload quantized.

        Args:
            mode: `"int8"`, `"int4"` or `"float8"`.
            config: optional `keras.quantizers.QuantizationConfig`.
            filters: optional regex (on layer names), list of them or
                callable that selects the projections to quantize.
                Defaults to all.

        Example:

        ```python
        classifier.quantize("int8")
        classifier.save_to_preset("classifier_int8")
        ```
        """
        kwargs.pop("type_check", None)  # Keras' flag; AIMDense is a Dense.
        if kwargs:
            raise ValueError(f"Unexpected arguments to quantize: {kwargs}.")
        quantization.quantize(self, mode, config, filters)

    def export(
        self,
        filepath,
        format="tf_saved_model",
        image_size=None,
        verbose=False,
    ):
        """Exports for inference, with a dynamic batch (Keras' formats).

        Calls the model first if it never ran, and takes the working route
        for the backend (see `keras_aim.export`); a format that cannot work
        on this backend raises a `ValueError` naming the route to take.

        Args:
            filepath: the artifact to write (`.onnx`, `.xml`, `.tflite`,
                `.pt2`, or a folder for a SavedModel).
            format: `"tf_saved_model"`, `"onnx"`, `"openvino"`, `"litert"`
                or `"torch"`.
            image_size: `None` (the model's size; any size for a model
                built with `image_shape=(None, None, 3)` where the format
                allows it), an int or `(height, width)`.
            verbose: print Keras' export messages.
        """
        return export_lib.export_model(
            self, filepath, format, image_size, verbose
        )

    def save_to_preset(self, preset_dir):
        """Writes config, weights and metadata into a Keras preset folder.

        The folder is written beside `preset_dir` and renamed into place, so
        a failed save never leaves a broken preset.
        """
        preset_utils.save_preset(self, preset_dir)
