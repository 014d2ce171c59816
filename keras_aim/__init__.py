"""keras_aim: AIM autoregressive image models for Keras 3.

Load the released AIM checkpoints, pre-train new models with the paper's
next-patch objective, probe and fine-tune them on JAX, PyTorch or TensorFlow
(El-Nouby et al., "Scalable Pre-training of Large Autoregressive Image
Models", ICML 2024).
"""

# ruff: noqa: E402 (the first import runs before the others)

# Before TensorFlow creates its runtime (see `utils/tensorflow_cpu.py`).
from keras_aim.utils import tensorflow_cpu

tensorflow_cpu.one_op_at_a_time()

from keras_aim import callbacks
from keras_aim import data
from keras_aim import layers
from keras_aim import losses
from keras_aim import optimizers
from keras_aim.layers import token_orders as orders
from keras_aim.models.aim.aim_backbone import AIMBackbone
from keras_aim.models.aim.aim_image_classifier import AIMImageClassifier
from keras_aim.models.aim.aim_image_converter import AIMImageConverter
from keras_aim.models.aim.aim_presets import PRESETS
from keras_aim.models.aim.aim_pretrainer import AIMPretrainer
from keras_aim.models.aimv2.aimv2_backbone import AIMv2Backbone
from keras_aim.models.aimv2.aimv2_lit import AIMv2LiT
from keras_aim.models.aimv2.aimv2_text_encoder import AIMv2TextEncoder
from keras_aim.models.aimv2.aimv2_tokenizer import AIMv2Tokenizer
from keras_aim.utils import deprecated_paths
from keras_aim.version import __version__

deprecated_paths.install()

__all__ = [
    "AIMBackbone",
    "AIMImageClassifier",
    "AIMImageConverter",
    "AIMPretrainer",
    "AIMv2Backbone",
    "AIMv2LiT",
    "AIMv2TextEncoder",
    "AIMv2Tokenizer",
    "PRESETS",
    "__version__",
    "callbacks",
    "data",
    "layers",
    "losses",
    "optimizers",
    "orders",
]
