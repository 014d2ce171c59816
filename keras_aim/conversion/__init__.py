"""Reading the authors' released AIM checkpoints.

`readers`: lazy tensor readers (safetensors, `.pth`). `released`: the
released layout's config, its key map and the tensor-by-tensor assignment
into a Keras model. Models are built by `keras_aim.preset_utils`, which
uses both; this package never imports the models.
"""

from keras_aim.conversion.readers import StateDictReader
from keras_aim.conversion.readers import open_state_dict
from keras_aim.conversion.released import HUB_CONFIG_FILE
from keras_aim.conversion.released import HUB_WEIGHTS_FILE
from keras_aim.conversion.released import infer_config
from keras_aim.conversion.released import load_released_weights

__all__ = [
    "HUB_CONFIG_FILE",
    "HUB_WEIGHTS_FILE",
    "StateDictReader",
    "infer_config",
    "load_released_weights",
    "open_state_dict",
]
