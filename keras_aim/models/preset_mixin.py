"""`from_preset` / `save_to_preset` shared by the AIM models."""


class PresetMixin:
    """Adds preset loading and saving to a model class."""

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        """Builds the model from a preset name, handle or folder.

        Args:
            preset: a built-in name (`"aim_600m"`, `"aim_1b"`, `"aim_3b"`,
                `"aim_7b"`), an `hf://owner/repo` handle, a Keras preset
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
        from keras_aim import presets

        return presets.load_preset(
            cls, preset, load_weights=load_weights, **kwargs
        )

    def save_to_preset(self, preset_dir):
        """Writes config, weights and metadata into a Keras preset folder."""
        from keras_aim import presets

        presets.save_preset(self, preset_dir)
