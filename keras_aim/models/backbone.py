"""The base of every keras_aim backbone: the trunk interface, presets,
LoRA, the layout map.

A backbone is a functional `keras.Model` on an input named `"images"` that
returns tokens; a family subclasses `Backbone` beside `keras.Model`
(`class AIMBackbone(Backbone, keras.Model)`, see `base.py` for why a mixin)
and gets `from_preset` / `save_to_preset`, LoRA fine-tuning on its
`AIMDense` kernels and the static `get_layout_map` of `keras.distribution`.

The trunk interface is shared too: a family sets `patch_embedding` (images
to a `(B, h, w, D)` grid), `position_embedding` (grid to `(B, N, D)`
tokens), `transformer_blocks` (each `block(x, attention_mask=...)`) and
`post_trunk_norm`, and gets `encode`, `extract_features`, `check_images`
and `num_patches`, the interface that `AIMImageClassifier` and
`AIMPretrainer` use, whatever the family.
"""

from keras import ops

from keras_aim.distribution import layout
from keras_aim.models import lora
from keras_aim.models.base import PresetMixin
from keras_aim.utils import validation


def run_trunk(
    layers, images, last_block, attention_mask=None, token_order=None
):
    """A trunk's forward pass up to block `last_block` (inclusive).

    The one forward path of every backbone: its functional graph, `encode`
    and `extract_features` all run it, the latter stopping at the deepest
    requested block.

    Args:
        layers: `(patch_embedding, position_embedding, blocks)`.
        images: `(B, H, W, C)` images (symbolic or eager).
        last_block: int, the index of the last block to run.
        attention_mask: optional boolean `(B, N, N)` mask.
        token_order: optional int `(N,)` permutation applied after the
            position embedding.

    Returns:
        The list of raw block outputs, blocks `0..last_block`.
    """
    patch_embedding, position_embedding, blocks = layers
    x = position_embedding(patch_embedding(images))
    if token_order is not None:
        x = ops.take(x, ops.cast(token_order, "int32"), axis=1)
    outputs = []
    for block in blocks[: last_block + 1]:
        x = block(x, attention_mask=attention_mask)
        outputs.append(x)
    return outputs


class Backbone(PresetMixin):
    """The trunk interface, presets, LoRA and the layout map, shared by the
    backbones."""

    # The block projections LoRA may target (a family with more, such as
    # AIMv2's `mlp_fc3`, lists them).
    lora_targets = lora.LORA_TARGETS

    @classmethod
    def from_preset(cls, preset, load_weights=True, **kwargs):
        loader = cls._preset_loader(preset)
        saved = loader.backbone_class()
        if cls is Backbone:
            cls = saved
        elif saved is not None and not issubclass(saved, cls):
            raise ValueError(
                f"{preset!r} holds a {saved.__name__}, not a {cls.__name__}; "
                f"load it with keras_aim.{saved.__name__}.from_preset."
            )
        return cls._from_loader(loader, load_weights, **kwargs)

    from_preset.__doc__ = PresetMixin.from_preset.__doc__

    def __call__(self, images, *args, **kwargs):
        if not isinstance(images, dict):
            self.check_images(images)
        return super().__call__(images, *args, **kwargs)

    def check_images(self, images, fixed_size=True):
        """Raises a clear `ValueError` if `images` cannot go through.

        The shape must fit the model; integer images and concrete arrays of
        raw pixels are refused (see `validation.check_image_values`).
        """
        validation.check_image_tensor(images)
        validation.check_image_shape(
            images.shape,
            self.patch_size,
            self.image_shape[-1],
            self.image_shape if fixed_size else None,
        )

    def num_patches(self, height, width):
        """Number of tokens for an image of `height` x `width` pixels."""
        return (height // self.patch_size) * (width // self.patch_size)

    def _resolve_layers(self, layers):
        return validation.resolve_block_indices(layers, self.num_layers)

    def _run_blocks(self, images, last, attention_mask, token_order):
        self.check_images(images, fixed_size=False)
        layers = (
            self.patch_embedding,
            self.position_embedding,
            self.transformer_blocks,
        )
        return run_trunk(layers, images, last, attention_mask, token_order)

    def encode(self, images, attention_mask=None, token_order=None):
        """Runs the trunk with an optional attention mask and token order.

        The same weights serve bidirectional use (no mask, as in `__call__`)
        and prefix-causal pre-training. Any H, W divisible by the patch size
        work, whatever `image_shape` the model was built with.

        Args:
            images: `(B, H, W, C)` normalised images.
            attention_mask: optional boolean `(B, N, N)`; `True` where query
                `i` may attend to key `j`, e.g. from
                `keras_aim.layers.prefix_causal_mask`.
            token_order: optional int `(N,)` permutation: tokens are taken in
                this order after the position embedding is added.

        Returns:
            `(B, N, hidden_dim)` final-norm tokens.
        """
        blocks = self._run_blocks(
            images, self.num_layers - 1, attention_mask, token_order
        )
        return self.post_trunk_norm(blocks[-1])

    def extract_features(
        self, images, layers, attention_mask=None, token_order=None
    ):
        """Returns the raw outputs (before the final norm) of blocks.

        Blocks after the deepest requested one are not computed.

        Args:
            images: `(B, H, W, C)` normalised images; any H, W divisible by
                the patch size.
            layers: int or list of 0-based block indices (negatives count
                from the end).
            attention_mask: optional boolean `(B, N, N)` mask.
            token_order: optional int `(N,)` token permutation.

        Returns:
            A list of `(B, N, hidden_dim)` tensors, one per requested block.
        """
        layers = self._resolve_layers(layers)
        blocks = self._run_blocks(
            images, max(layers), attention_mask, token_order
        )
        return [blocks[index] for index in layers]

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
                `"mlp_fc1"`, `"mlp_fc2"` (and `"mlp_fc3"` for AIMv2).
                Defaults to all of them.
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
