"""Layers of the AIM and AIMv2 trunks, probe and pre-training objective."""

from keras_aim.layers.attentive_probe import AIMAttentivePooling
from keras_aim.layers.dense import AIMDense
from keras_aim.layers.learned_position_embedding import LearnedPositionEmbedding
from keras_aim.layers.linear_probe import AIMLinearProbe
from keras_aim.layers.masks import causal_mask
from keras_aim.layers.masks import prefix_causal_mask
from keras_aim.layers.patch_embedding import AIMPatchEmbedding
from keras_aim.layers.patchify import Patchify
from keras_aim.layers.patchify import Unpatchify
from keras_aim.layers.pixel_head import AIMPixelHead
from keras_aim.layers.position_embedding import SinCos2DPositionEmbedding
from keras_aim.layers.position_embedding import sincos_2d_position_embedding
from keras_aim.layers.swiglu_transformer_block import AIMv2TransformerBlock
from keras_aim.layers.transformer_block import AIMTransformerBlock

__all__ = [
    "AIMAttentivePooling",
    "AIMDense",
    "AIMLinearProbe",
    "AIMPatchEmbedding",
    "AIMPixelHead",
    "AIMTransformerBlock",
    "AIMv2TransformerBlock",
    "LearnedPositionEmbedding",
    "Patchify",
    "SinCos2DPositionEmbedding",
    "Unpatchify",
    "causal_mask",
    "prefix_causal_mask",
    "sincos_2d_position_embedding",
]
