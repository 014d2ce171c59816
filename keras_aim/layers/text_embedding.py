"""The text tower's embedding and its end-of-text pooling (AIMv2 LiT)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="keras_aim")
class TextEmbedding(keras.layers.Layer):
    """Token embedding plus a learned position table.

    The input of the AIMv2 LiT text tower (Fini et al., 2024; CLIP's
    layout): `token_embedding[ids] + position_embedding[:L]` for `L` token
    ids, `L <= max_sequence_length`. No norm follows.

    Args:
        vocabulary_size: int, number of token ids.
        hidden_dim: int, token width.
        max_sequence_length: int, rows of the position table (the context
            length, 77 for the CLIP tokenizer).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        token_ids: int `(B, L)` token ids.

    Example:

    >>> embedding = TextEmbedding(vocabulary_size=10, hidden_dim=8,
    ...                           max_sequence_length=6)
    >>> tuple(embedding(keras.ops.zeros((2, 4), "int32")).shape)
    (2, 4, 8)
    """

    def __init__(
        self, vocabulary_size, hidden_dim, max_sequence_length, **kwargs
    ):
        super().__init__(**kwargs)
        self.vocabulary_size = int(vocabulary_size)
        self.hidden_dim = int(hidden_dim)
        self.max_sequence_length = int(max_sequence_length)
        self.token_embedding = keras.layers.Embedding(
            self.vocabulary_size,
            self.hidden_dim,
            embeddings_initializer=keras.initializers.RandomNormal(stddev=0.02),
            dtype=self.dtype_policy,
            name="token_embedding",
        )

    def build(self, input_shape):
        self.token_embedding.build(input_shape)
        self.position_embedding = self.add_weight(
            name="position_embedding",
            shape=(self.max_sequence_length, self.hidden_dim),
            initializer=keras.initializers.RandomNormal(stddev=0.01),
        )
        self.built = True

    def call(self, token_ids):
        length = token_ids.shape[-1]
        if length is not None and length > self.max_sequence_length:
            raise ValueError(
                f"The token ids have length {length}, more than the text "
                f"tower's max_sequence_length={self.max_sequence_length}."
            )
        tokens = self.token_embedding(token_ids)
        positions = self.position_embedding[: ops.shape(token_ids)[-1]]
        return tokens + ops.cast(positions, tokens.dtype)[None, :, :]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape) + (self.hidden_dim,)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary_size=self.vocabulary_size,
            hidden_dim=self.hidden_dim,
            max_sequence_length=self.max_sequence_length,
        )
        return config


def first_token_position(token_ids, token_id):
    """The index of the first `token_id` in each row of `token_ids`, or 0
    where a row has none (as `argmax` of an all-false mask gives)."""
    length = ops.shape(token_ids)[-1]
    positions = ops.arange(0, length, 1, dtype="int32")[None, :]
    found = ops.where(ops.equal(token_ids, token_id), positions, length)
    first = ops.min(found, axis=-1)
    return ops.where(ops.equal(first, length), 0, first)


@keras.saving.register_keras_serializable(package="keras_aim")
class EndOfTextPooling(keras.layers.Layer):
    """Takes each sequence's token at its first end-of-text id.

    The text tower's output in the AIMv2 release (`ExtractEOS`) and in
    CLIP: with causal attention, the token at the first `eos_token_id` has
    seen the whole text and nothing after it (padding). A sequence without
    the id gives its first token.

    Args:
        eos_token_id: int, the end-of-text id (49407 for the CLIP
            tokenizer).
        **kwargs: standard `keras.layers.Layer` arguments.

    Call arguments:
        tokens: `(B, L, D)` token features.
        token_ids: int `(B, L)` ids the features come from.

    Example:

    >>> pool = EndOfTextPooling(eos_token_id=2)
    >>> tokens = keras.ops.reshape(keras.ops.arange(6.0), (1, 3, 2))
    >>> ids = keras.ops.convert_to_tensor([[5, 2, 2]])
    >>> keras.ops.convert_to_numpy(pool(tokens, ids)).tolist()
    [[2.0, 3.0]]
    """

    def __init__(self, eos_token_id, **kwargs):
        super().__init__(**kwargs)
        self.eos_token_id = int(eos_token_id)

    def call(self, tokens, token_ids):
        token_ids = ops.cast(token_ids, "int32")
        first = first_token_position(token_ids, self.eos_token_id)
        pick = ops.one_hot(first, ops.shape(token_ids)[-1], dtype=tokens.dtype)
        return ops.einsum("bl,bld->bd", pick, tokens)

    def compute_output_shape(self, tokens_shape, token_ids_shape):
        return (tokens_shape[0], tokens_shape[-1])

    def get_config(self):
        config = super().get_config()
        config.update(eos_token_id=self.eos_token_id)
        return config
