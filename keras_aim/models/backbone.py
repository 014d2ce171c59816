"""The base of every keras_aim backbone: presets, LoRA, the layout map.

A backbone is a functional `keras.Model` on an input named `"images"` that
returns tokens; a family subclasses `Backbone` beside `keras.Model`
(`class AIMBackbone(Backbone, keras.Model)`, see `base.py` for why a mixin)
and gets `from_preset` / `save_to_preset`, LoRA fine-tuning on its
`AIMDense` kernels and the static `get_layout_map` of `keras.distribution`.
"""

from keras_aim.distribution import layout
from keras_aim.models import lora
from keras_aim.models.base import PresetMixin


class Backbone(PresetMixin):
    """Presets, LoRA and the layout map, shared by the backbones."""

    # The layout of every keras_aim weight (see keras_aim.distribution):
    # `get_layout_map(device_mesh, model_parallel_dim_name="model",
    # data_parallel_dim_name="batch")`, a static method as in keras-hub.
    get_layout_map = staticmethod(layout.get_layout_map)

    @classmethod
    def _from_loader(cls, loader, load_weights, **kwargs):
        return loader.load_backbone(cls, load_weights, **kwargs)

    def enable_lora(self, rank, target_layers=None, blocks=None, alpha=None):
        """Adds LoRA updates to the blocks' kernels and freezes the rest.

        Uses Keras' `Dense.enable_lora` on each target kernel: its output
        becomes `x @ (W + alpha / rank * A @ B)` with `W` frozen, `A`
        (`he_uniform`) and `B` (zeros) trainable, so training starts from
        the unchanged model. Every other backbone weight (embeddings,
        LayerNorms) is frozen as well.

        Args:
            rank: int, the rank of `A @ B`.
            target_layers: names among `"attn_qkv"`, `"attn_proj"`,
                `"mlp_fc1"`, `"mlp_fc2"`. Defaults to all four.
            blocks: 0-based block indices. Defaults to every block.
            alpha: float scale numerator. Defaults to `rank` (scale 1).

        Returns:
            The LoRA variables (the only trainable backbone weights).
        """
        return lora.enable_lora(self, rank, target_layers, blocks, alpha)

    def save_lora_weights(self, path):
        """Writes only the LoRA matrices (an `.h5` file) to `path`."""
        lora.save_lora_weights(self, path)

    def load_lora_weights(self, path):
        """Loads LoRA matrices saved by `save_lora_weights`.

        Enables LoRA with the saved rank and targets first if needed; a
        file made for another architecture or LoRA setting is refused.
        """
        lora.load_lora_weights(self, path)

    def merge_lora_weights(self):
        """Folds the LoRA updates into the kernels (outputs unchanged)."""
        lora.merge_lora_weights(self)
