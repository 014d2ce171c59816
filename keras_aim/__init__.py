"""keras_aim: AIM autoregressive image models for Keras 3.

Load the released AIM checkpoints, pre-train new models with the paper's
next-patch objective, probe and fine-tune them on JAX, PyTorch or TensorFlow
(El-Nouby et al., "Scalable Pre-training of Large Autoregressive Image
Models", ICML 2024).
"""

from keras_aim import callbacks
from keras_aim import data
from keras_aim import layers
from keras_aim import losses
from keras_aim import optimizers
from keras_aim import orders
from keras_aim.models.backbone import AIMBackbone
from keras_aim.models.classifier import AIMImageClassifier
from keras_aim.models.pretrainer import AIMPretrainer
from keras_aim.preprocessing import AIMImageConverter
from keras_aim.presets import PRESETS
from keras_aim.version import __version__

__all__ = [
    "AIMBackbone",
    "AIMImageClassifier",
    "AIMImageConverter",
    "AIMPretrainer",
    "PRESETS",
    "__version__",
    "callbacks",
    "data",
    "layers",
    "losses",
    "optimizers",
    "orders",
]
