"""Layer-wise learning-rate decay for fine-tuning (BEiT, MAE): AdamW with
one learning-rate factor per block."""

import re

import keras

from keras_aim.optimizers.pretraining import PretrainingAdamW
from keras_aim.optimizers.pretraining import warmup_cosine_decay
from keras_aim.utils.validation import positive_int


@keras.saving.register_keras_serializable(package="keras_aim")
class LayerDecayAdamW(PretrainingAdamW):
    """`PretrainingAdamW` with a learning-rate factor per variable.

    Keras optimizers use one learning rate for every variable; layer-wise
    decay (BEiT, MAE fine-tuning) needs one per block, so this subclass
    scales the rate in `update_step` by the factor of the first
    `learning_rate_scales` pattern that matches the variable's path (1
    otherwise). Weight decay is applied at the base rate.

    Args:
        learning_rate_scales: list of `[regular expression, factor]`,
            matched with `re.match` against variable paths such as
            `block_3/attn_qkv/kernel`.
        **kwargs: `PretrainingAdamW` arguments.
    """

    def __init__(self, learning_rate_scales=(), **kwargs):
        super().__init__(**kwargs)
        self.learning_rate_scales = [
            [str(pattern), float(scale)]
            for pattern, scale in learning_rate_scales
        ]
        self._patterns = [
            (re.compile(p), s) for p, s in self.learning_rate_scales
        ]
        self._scale_cache = {}

    def scale_for(self, path):
        """The learning-rate factor of the variable at `path`."""
        if path not in self._scale_cache:
            self._scale_cache[path] = next(
                (s for p, s in self._patterns if p.match(path)), 1.0
            )
        return self._scale_cache[path]

    def build(self, var_list):
        super().build(var_list)
        self._scales = [self.scale_for(v.path) for v in var_list]

    def learning_rate_scale(self, variable):
        # The TensorFlow backend passes its own variable objects here (no
        # `path`); Keras' optimizers find per-variable state by index.
        return self._scales[self._get_variable_index(variable)]

    def update_step(self, gradient, variable, learning_rate):
        scale = self.learning_rate_scale(variable)
        if scale != 1.0:
            learning_rate = learning_rate * scale
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self):
        config = super().get_config()
        config["learning_rate_scales"] = self.learning_rate_scales
        return config


def layer_decay_scales(num_layers, layer_decay):
    """`[[pattern, factor]]`: block `i` gets `decay ** (num_layers - i)`, the
    patch and position embeddings `decay ** (num_layers + 1)`, the rest 1.

    Example:

    >>> layer_decay_scales(2, 0.5)[0]
    ['(.*/)?block_0/', 0.25]
    """
    if not 0.0 < float(layer_decay) <= 1.0:
        raise ValueError(
            f"`layer_decay` must be in (0, 1]; got layer_decay={layer_decay!r}."
        )
    num_layers = positive_int(num_layers, "num_layers")
    scales = [
        [f"(.*/)?block_{i}/", float(layer_decay) ** (num_layers - i)]
        for i in range(num_layers)
    ]
    scales.append(
        [
            "(.*/)?(patch_embedding|position_embedding)/",
            float(layer_decay) ** (num_layers + 1),
        ]
    )
    return scales


def layer_decay_optimizer(
    num_layers,
    layer_decay,
    total_steps,
    learning_rate,
    weight_decay=0.05,
    warmup_fraction=0.05,
):
    """A `LayerDecayAdamW` with warm-up and cosine decay for fine-tuning."""
    total_steps = positive_int(total_steps, "total_steps")
    schedule = warmup_cosine_decay(
        float(learning_rate),
        total_steps,
        int(round(float(warmup_fraction) * total_steps)),
    )
    return LayerDecayAdamW(
        learning_rate_scales=layer_decay_scales(num_layers, layer_decay),
        learning_rate=schedule,
        weight_decay=weight_decay,
        beta_1=0.9,
        beta_2=0.999,
        global_clipnorm=1.0,
    )
