"""Layers of the AIM and AIMv2 trunks, probe, pre-training objective and
the AIMv2 LiT towers."""

from keras_aim.layers.attention_pooling import AttentionPooling
from keras_aim.layers.attentive_probe import AIMAttentivePooling
from keras_aim.layers.contrastive_logits import ContrastiveLogits
from keras_aim.layers.contrastive_logits import ZeroShotLogits
from keras_aim.layers.contrastive_logits import l2_normalize
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
from keras_aim.layers.text_embedding import EndOfTextPooling
from keras_aim.layers.text_embedding import TextEmbedding
from keras_aim.layers.transformer_block import AIMTransformerBlock

__all__ = [
    "AIMAttentivePooling",
    "AIMDense",
    "AIMLinearProbe",
    "AIMPatchEmbedding",
    "AIMPixelHead",
    "AIMTransformerBlock",
    "AIMv2TransformerBlock",
    "AttentionPooling",
    "ContrastiveLogits",
    "EndOfTextPooling",
    "LearnedPositionEmbedding",
    "Patchify",
    "SinCos2DPositionEmbedding",
    "TextEmbedding",
    "Unpatchify",
    "ZeroShotLogits",
    "causal_mask",
    "l2_normalize",
    "prefix_causal_mask",
    "sincos_2d_position_embedding",
]
