"""Reading the authors' released checkpoints and converting them.

- `readers`: lazy tensor readers (safetensors, `.pth`).
- `released_aim`: the released AIM layout: its config, key map and the
  tensor-by-tensor assignment into a Keras model.
- `loaders`: `ReleasedCheckpointLoader`, the `PresetLoader` of released
  folders and `.pth` pairs.
- `cli` (`python -m keras_aim.convert`): released checkpoint -> Keras
  preset folder.

Nothing here imports the models (loaders get the class to build).
"""

from keras_aim.convert.readers import StateDictReader
from keras_aim.convert.readers import open_state_dict
from keras_aim.convert.released_aim import HUB_CONFIG_FILE
from keras_aim.convert.released_aim import HUB_WEIGHTS_FILE
from keras_aim.convert.released_aim import infer_config
from keras_aim.convert.released_aim import load_released_weights


def main(argv=None):
    """`python -m keras_aim.convert`; see `keras_aim.convert.cli`."""
    from keras_aim.convert import cli  # imports the models: only when run

    return cli.main(argv)


__all__ = [
    "HUB_CONFIG_FILE",
    "HUB_WEIGHTS_FILE",
    "StateDictReader",
    "infer_config",
    "load_released_weights",
    "main",
    "open_state_dict",
]
