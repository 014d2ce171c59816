"""The causal text tower of the AIMv2 LiT model."""

import keras
import numpy as np

from keras_aim.layers.swiglu_transformer_block import AIMv2TransformerBlock
from keras_aim.layers.text_embedding import EndOfTextPooling
from keras_aim.layers.text_embedding import TextEmbedding
from keras_aim.models.aim.aim_backbone import _bytes_per_parameter
from keras_aim.models.aimv2.aimv2_presets import text_parameter_count
from keras_aim.models.base import AIMModelBase
from keras_aim.utils import validation


@keras.saving.register_keras_serializable(package="keras_aim")
class AIMv2TextEncoder(AIMModelBase, keras.Model):
    """The text tower of AIMv2 LiT (Fini et al., 2024): ids to one vector.

    Token embedding plus a learned position table, `num_layers` causal
    pre-norm blocks (RMSNorm, fused-qkv attention, SwiGLU MLP, no biases;
    the blocks of `AIMv2Backbone` with causal attention), a final RMSNorm,
    and the token at each text's first `eos_token_id` as its feature (the
    release's `AIMv2TextEncoder` and `ExtractEOS`). Defaults are the
    released tower's sizes.

    Args:
        vocabulary_size: int. Defaults to 49408 (CLIP's BPE).
        hidden_dim: int, token width. Defaults to 768.
        num_layers: int. Defaults to 12.
        num_heads: int. Defaults to 6.
        intermediate_dim: int, SwiGLU hidden width. Defaults to 2048.
        max_sequence_length: int, the context length. Defaults to 77.
        eos_token_id: int, the end-of-text id. Defaults to 49407.
        layer_norm_epsilon: float, the RMSNorm epsilon. Defaults to `1e-5`.
        dtype: dtype or `keras.DTypePolicy` for every layer.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    >>> encoder = AIMv2TextEncoder(vocabulary_size=40, hidden_dim=32,
    ...     num_layers=2, num_heads=2, intermediate_dim=64,
    ...     max_sequence_length=8, eos_token_id=39)
    >>> tuple(encoder(keras.ops.ones((3, 8), "int32")).shape)
    (3, 32)
    """

    def __init__(
        self,
        vocabulary_size=49408,
        hidden_dim=768,
        num_layers=12,
        num_heads=6,
        intermediate_dim=2048,
        max_sequence_length=77,
        eos_token_id=49407,
        layer_norm_epsilon=1e-5,
        dtype=None,
        **kwargs,
    ):
        validation.check_model_kwargs(type(self), kwargs)
        for name, value, limit in (
            ("vocabulary_size", vocabulary_size, "num_classes"),
            ("hidden_dim", hidden_dim, "hidden_dim"),
            ("num_layers", num_layers, "num_layers"),
            ("intermediate_dim", intermediate_dim, "hidden_dim"),
            ("max_sequence_length", max_sequence_length, "num_patches"),
        ):
            validation.check_size_limit(
                validation.positive_int(value, name), limit, name
            )
        validation.check_num_heads(num_heads, hidden_dim)
        validation.positive_int(eos_token_id, "eos_token_id", minimum=0)
        if eos_token_id >= vocabulary_size:
            raise ValueError(
                f"`eos_token_id`={eos_token_id} must be an id below "
                f"vocabulary_size={vocabulary_size}."
            )
        epsilon = layer_norm_epsilon
        if (
            isinstance(epsilon, bool)
            or not isinstance(epsilon, (int, float))
            or not 0.0 < epsilon <= 1.0
        ):
            raise ValueError(
                "`layer_norm_epsilon` must be a number in (0, 1]; got "
                f"layer_norm_epsilon={layer_norm_epsilon!r}."
            )
        validation.check_parameter_memory(
            text_parameter_count(
                vocabulary_size,
                hidden_dim,
                num_layers,
                intermediate_dim,
                max_sequence_length,
            ),
            _bytes_per_parameter(dtype),
            f"AIMv2TextEncoder(hidden_dim={hidden_dim}, num_layers="
            f"{num_layers})",
        )
        # === Layers ===
        text_embedding = TextEmbedding(
            vocabulary_size,
            hidden_dim,
            max_sequence_length,
            dtype=dtype,
            name="text_embedding",
        )
        transformer_blocks = [
            AIMv2TransformerBlock(
                hidden_dim=hidden_dim,
                num_heads=num_heads,
                intermediate_dim=intermediate_dim,
                layer_norm_epsilon=layer_norm_epsilon,
                causal=True,
                dtype=dtype,
                name=f"block_{i}",
            )
            for i in range(num_layers)
        ]
        post_trunk_norm = keras.layers.RMSNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="post_trunk_norm"
        )
        pooling = EndOfTextPooling(
            eos_token_id, dtype=dtype, name="end_of_text_pooling"
        )

        # === Functional model ===
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        x = text_embedding(token_ids)
        for block in transformer_blocks:
            x = block(x)
        features = pooling(post_trunk_norm(x), token_ids)
        super().__init__(
            inputs=token_ids, outputs=features, dtype=dtype, **kwargs
        )
        self._keep_dtype_policy(dtype)
        self.text_embedding = text_embedding
        self.transformer_blocks = transformer_blocks
        self.post_trunk_norm = post_trunk_norm
        self.pooling = pooling

        # === Config ===
        self.vocabulary_size = int(vocabulary_size)
        self.hidden_dim = int(hidden_dim)
        self.num_layers = int(num_layers)
        self.num_heads = int(num_heads)
        self.intermediate_dim = int(intermediate_dim)
        self.max_sequence_length = int(max_sequence_length)
        self.eos_token_id = int(eos_token_id)
        self.layer_norm_epsilon = float(layer_norm_epsilon)

    def __call__(self, token_ids, *args, **kwargs):
        # Concrete ids are checked (an id past the table would be clamped
        # silently on jax); symbolic ones are left to the graph.
        if isinstance(token_ids, np.ndarray):
            token_ids = self.check_token_ids(token_ids)
        return super().__call__(token_ids, *args, **kwargs)

    def _check_inputs(self, x, what="x"):
        validation.check_not_empty(x, what)

    def check_token_ids(self, token_ids):
        """Returns `token_ids` as an int32 array if it fits this tower.

        Raises:
            ValueError: not a 2-D integer batch, longer than
                `max_sequence_length`, or an id outside the vocabulary.
        """
        array = np.asarray(keras.ops.convert_to_numpy(token_ids))
        if array.ndim != 2 or not np.issubdtype(array.dtype, np.integer):
            raise ValueError(
                "`token_ids` must be a 2-D integer array (batch, length); got "
                f"shape {array.shape} and dtype {array.dtype}."
            )
        if array.shape[0] == 0 or array.shape[1] == 0:
            raise ValueError(f"`token_ids` is empty (shape {array.shape}).")
        if array.shape[1] > self.max_sequence_length:
            raise ValueError(
                f"`token_ids` have length {array.shape[1]}, more than "
                f"max_sequence_length={self.max_sequence_length}."
            )
        bad = array[(array < 0) | (array >= self.vocabulary_size)]
        if bad.size:
            raise ValueError(
                f"`token_ids` hold {bad[0]}, outside the vocabulary [0, "
                f"{self.vocabulary_size})."
            )
        return array.astype("int32")

    def get_config(self):
        return {
            **self._base_config(),
            "vocabulary_size": self.vocabulary_size,
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_dim": self.intermediate_dim,
            "max_sequence_length": self.max_sequence_length,
            "eos_token_id": self.eos_token_id,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }
