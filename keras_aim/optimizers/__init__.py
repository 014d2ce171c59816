"""The AIM optimizers: the pre-training recipe (AdamW, warm-up and cosine
decay, weight-decay exclusions) and layer-wise decay for fine-tuning.

- `pretraining`: `pretraining_optimizer`, `PretrainingAdamW`, schedules.
- `layer_decay`: `layer_decay_optimizer`, `LayerDecayAdamW`.
- `torch_adamw`: the in-place AdamW update on the torch backend.
"""

from keras_aim.optimizers.layer_decay import LayerDecayAdamW
from keras_aim.optimizers.layer_decay import layer_decay_optimizer
from keras_aim.optimizers.layer_decay import layer_decay_scales
from keras_aim.optimizers.pretraining import NO_WEIGHT_DECAY_NAMES
from keras_aim.optimizers.pretraining import PretrainingAdamW
from keras_aim.optimizers.pretraining import peak_learning_rate
from keras_aim.optimizers.pretraining import pretraining_optimizer
from keras_aim.optimizers.pretraining import scaled_learning_rate
from keras_aim.optimizers.pretraining import warmup_cosine_decay

__all__ = [
    "NO_WEIGHT_DECAY_NAMES",
    "LayerDecayAdamW",
    "PretrainingAdamW",
    "layer_decay_optimizer",
    "layer_decay_scales",
    "peak_learning_rate",
    "pretraining_optimizer",
    "scaled_learning_rate",
    "warmup_cosine_decay",
]
