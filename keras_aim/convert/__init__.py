"""Reading the authors' released checkpoints and converting them.

- `readers`: lazy tensor readers (safetensors, `.pth`).
- `released_aim`: the released AIM layout: its config, key map and the
  tensor-by-tensor assignment into a Keras model.
- `released_aimv2`: the AIMv2 key layouts (the release's pinned hub
  revisions, transformers' `Aimv2VisionModel`, the LiT image tower), told
  apart by their keys, and their assignment into an `AIMv2Backbone`;
  `released_aimv2_lit` the rest of the LiT checkpoint (text tower, head,
  projections, temperature) for an `AIMv2LiT`; `plans` the checked,
  tensor-by-tensor assignment they share.
- `loaders`: `ReleasedCheckpointLoader`, the `PresetLoader` of released
  folders and `.pth` pairs; `aimv2_loaders` the AIMv2 ones.
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
