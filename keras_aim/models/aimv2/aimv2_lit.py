"""AIMv2 LiT: the image and text towers, zero-shot classification."""

import keras
import numpy as np
from keras import ops

from keras_aim.layers.attention_pooling import AttentionPooling
from keras_aim.layers.contrastive_logits import ContrastiveLogits
from keras_aim.layers.contrastive_logits import ZeroShotLogits
from keras_aim.layers.contrastive_logits import l2_normalize
from keras_aim.layers.dense import AIMDense
from keras_aim.models.aim.aim_image_classifier import check_class_names
from keras_aim.models.aimv2.aimv2_backbone import AIMv2Backbone
from keras_aim.models.aimv2.aimv2_text_encoder import AIMv2TextEncoder
from keras_aim.models.aimv2.aimv2_tokenizer import AIMv2Tokenizer
from keras_aim.models.base import PresetMixin
from keras_aim.utils import validation

DEFAULT_TEMPLATES = ("a photo of a {}.",)


@keras.saving.register_keras_serializable(package="keras_aim")
class AIMv2LiT(PresetMixin, keras.Model):
    """AIMv2 image and text towers aligned by LiT (Fini et al., 2024).

    The image tower is an `AIMv2Backbone` whose tokens an attention-pool
    head (one learned query, as many heads as the trunk) pools into one
    vector; the text tower is an `AIMv2TextEncoder` (causal, pooled at
    the end-of-text token). Each is projected (no bias) to
    `projection_dim`, and the logits are `exp(log_logit_scale)` (clamped
    to `max_logit_scale`) times the cosine similarity, as in CLIP.
    Called on `{"images", "token_ids"}` it returns `logits_per_image`
    `(B_images, B_texts)` and `logits_per_text` (its transpose).
    `zero_shot_classifier` turns class names into an image classifier.

    Args:
        image_encoder: an `AIMv2Backbone` (the trunk of the image tower).
        text_encoder: an `AIMv2TextEncoder`.
        projection_dim: int, width of the shared space. Defaults to 768.
        initial_temperature: float, the temperature the logit scale
            starts from. Defaults to `0.07`.
        max_logit_scale: float. Defaults to `100`.
        image_converter: optional `keras_aim.AIMImageConverter` (saved
            with the preset).
        tokenizer: optional `keras_aim.AIMv2Tokenizer`, so that
            `encode_text` and `zero_shot_classifier` take strings (saved
            with the preset as `tokenizer.json`).
        dtype: dtype or `keras.DTypePolicy` of the head and projections.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    ```python
    lit = keras_aim.AIMv2LiT.from_preset("aimv2_large_patch14_224_lit")
    classifier = lit.zero_shot_classifier(["cat", "dog", "car"])
    logits = classifier.predict(images)  # (B, 3)
    ```
    """

    image_encoder_cls = AIMv2Backbone
    text_encoder_cls = AIMv2TextEncoder
    tokenizer_cls = AIMv2Tokenizer
    nested_config_objects = ("image_encoder", "text_encoder", "image_converter")

    def __init__(
        self,
        image_encoder,
        text_encoder,
        projection_dim=768,
        initial_temperature=0.07,
        max_logit_scale=100.0,
        image_converter=None,
        tokenizer=None,
        dtype=None,
        **kwargs,
    ):
        validation.check_model_kwargs(type(self), kwargs)
        for name, value, cls in (
            ("image_encoder", image_encoder, AIMv2Backbone),
            ("text_encoder", text_encoder, AIMv2TextEncoder),
        ):
            if not isinstance(value, cls):
                raise ValueError(
                    f"`{name}` must be a keras_aim.{cls.__name__}; got "
                    f"{type(value).__name__}."
                )
        projection_dim = validation.check_size_limit(
            validation.positive_int(projection_dim, "projection_dim"),
            "hidden_dim",
            "projection_dim",
        )
        head_dtype = dtype if dtype is not None else image_encoder.dtype_policy
        # === Layers ===
        image_head = AttentionPooling(
            image_encoder.hidden_dim,
            image_encoder.num_heads,
            dtype=head_dtype,
            name="image_head",
        )
        image_projection = AIMDense(
            projection_dim,
            use_bias=False,
            dtype=head_dtype,
            name="image_projection",
        )
        text_projection = AIMDense(
            projection_dim,
            use_bias=False,
            dtype=head_dtype,
            name="text_projection",
        )
        logit_layer = ContrastiveLogits(
            initial_temperature,
            max_logit_scale,
            dtype=head_dtype,
            name="logit_scale",
        )

        # === Functional model ===
        images = keras.Input(shape=image_encoder.image_shape, name="images")
        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        image_embeddings = image_projection(image_head(image_encoder(images)))
        text_embeddings = text_projection(text_encoder(token_ids))
        logits = logit_layer(image_embeddings, text_embeddings)
        super().__init__(
            inputs={"images": images, "token_ids": token_ids},
            outputs={
                "logits_per_image": logits,
                "logits_per_text": ops.transpose(logits),
            },
            dtype=dtype,
            **kwargs,
        )
        self._keep_dtype_policy(head_dtype)
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.image_head = image_head
        self.image_projection = image_projection
        self.text_projection = text_projection
        self.logit_layer = logit_layer
        self.image_converter = image_converter
        self.tokenizer = tokenizer

        # === Config ===
        self.projection_dim = projection_dim
        self.initial_temperature = logit_layer.initial_temperature
        self.max_logit_scale = logit_layer.max_logit_scale

    def __call__(self, inputs, *args, **kwargs):
        if isinstance(inputs, dict):
            ids = inputs.get("token_ids")
            if isinstance(ids, np.ndarray):
                ids = self.text_encoder.check_token_ids(ids)
                inputs = {**inputs, "token_ids": ids}
            if inputs.get("images") is not None:
                self.image_encoder.check_images(inputs["images"])
        return super().__call__(inputs, *args, **kwargs)

    @property
    def tokenizer(self):
        """The `AIMv2Tokenizer` for strings, or `None`."""
        return self._tokenizer

    @tokenizer.setter
    def tokenizer(self, tokenizer):
        if tokenizer is not None:
            if not isinstance(tokenizer, AIMv2Tokenizer):
                raise ValueError(
                    "`tokenizer` must be a keras_aim.AIMv2Tokenizer or None; "
                    f"got {type(tokenizer).__name__}."
                )
            text = self.text_encoder
            if tokenizer.vocabulary_size > text.vocabulary_size:
                raise ValueError(
                    f"The tokenizer has {tokenizer.vocabulary_size} ids but "
                    f"the text tower only {text.vocabulary_size}."
                )
            if tokenizer.end_token_id != text.eos_token_id:
                raise ValueError(
                    f"The tokenizer's end-of-text id is "
                    f"{tokenizer.end_token_id}, the text tower pools at "
                    f"eos_token_id={text.eos_token_id}."
                )
            tokenizer.sequence_length = text.max_sequence_length
        self._tokenizer = tokenizer

    @property
    def logit_scale(self):
        """The current scale of the logits (a float, `1 / temperature`)."""
        return float(ops.convert_to_numpy(self.logit_layer.logit_scale()))

    def encode_images(self, images, normalize=False):
        """Image embeddings `(B, projection_dim)`.

        Args:
            images: `(B, H, W, C)` normalised images; any size divisible by
                the patch size (the position table is resampled).
            normalize: bool, L2-normalise the embeddings. Defaults to
                `False` (the projections, as the release returns them).
        """
        tokens = self.image_encoder.encode(images)
        embeddings = self.image_projection(self.image_head(tokens))
        return l2_normalize(embeddings) if normalize else embeddings

    def tokenize(self, texts):
        """Token ids `(len(texts), max_sequence_length)` of strings."""
        if self.tokenizer is None:
            raise ValueError(
                "This AIMv2LiT has no tokenizer, so it takes token ids only. "
                "Attach one: lit.tokenizer = keras_aim.AIMv2Tokenizer."
                "from_folder(FOLDER) with a folder holding tokenizer.json, or "
                "vocab.json and merges.txt of CLIP's BPE vocabulary."
            )
        return self.tokenizer(texts)

    def encode_text(self, texts, normalize=False):
        """Text embeddings `(B, projection_dim)`.

        Args:
            texts: a string, a list of strings (through `tokenizer`) or an
                int array of token ids `(B, L)`, `L <= max_sequence_length`.
            normalize: bool, L2-normalise the embeddings. Defaults to
                `False`.
        """
        if isinstance(texts, str) or (
            isinstance(texts, (list, tuple))
            and texts
            and all(isinstance(t, str) for t in texts)
        ):
            token_ids = self.tokenize(texts)
        else:
            token_ids = self.text_encoder.check_token_ids(texts)
        embeddings = self.text_projection(self.text_encoder(token_ids))
        return l2_normalize(embeddings) if normalize else embeddings

    def class_embeddings(self, class_names, templates=None, batch_size=256):
        """One unit vector per class: the normalised mean of the class's
        normalised prompt embeddings (CLIP's prompt ensembling).

        Returns:
            float32 NumPy array `(len(class_names), projection_dim)`.
        """
        names = check_class_names(class_names, len(class_names or []))
        if not names:
            raise ValueError("`class_names` is empty: give at least one.")
        templates = _check_templates(templates)
        batch_size = validation.positive_int(batch_size, "batch_size")
        prompts = [t.format(name) for name in names for t in templates]
        parts = []
        for start in range(0, len(prompts), batch_size):
            chunk = self.encode_text(
                prompts[start : start + batch_size], normalize=True
            )
            parts.append(np.asarray(ops.convert_to_numpy(chunk), np.float32))
        embeddings = np.concatenate(parts).reshape(
            len(names), len(templates), -1
        )
        mean = embeddings.mean(axis=1)
        return mean / np.maximum(
            np.linalg.norm(mean, axis=-1, keepdims=True), 1e-12
        )

    def zero_shot_classifier(self, class_names, templates=None, batch_size=256):
        """An image classifier from class names alone.

        Each class's prompts (`template.format(name)` for every template)
        are embedded by the text tower and averaged into one class vector;
        the classifier's logits are `logit_scale * cos(image, class)`.

        Args:
            class_names: list of distinct non-empty strings.
            templates: list of prompt templates with one `{}`. Defaults to
                `("a photo of a {}.",)`.
            batch_size: int, prompts per text-tower call. Defaults to 256.

        Returns:
            A `keras.Model` from normalised images `(B, H, W, C)` to logits
            `(B, len(class_names))`, with `class_names` and `templates`
            attributes. It shares the image tower's weights.
        """
        templates = _check_templates(templates)
        weights = self.class_embeddings(class_names, templates, batch_size)
        images = keras.Input(
            shape=self.image_encoder.image_shape, name="images"
        )
        embeddings = self.image_projection(
            self.image_head(self.image_encoder(images))
        )
        head = ZeroShotLogits(
            weights, self.logit_scale, dtype=self.dtype_policy, name="classes"
        )
        classifier = keras.Model(images, head(embeddings), name="zero_shot")
        classifier.class_names = list(class_names)
        classifier.templates = list(templates)
        return classifier

    def get_config(self):
        config = {
            **self._base_config(),
            "image_encoder": keras.saving.serialize_keras_object(
                self.image_encoder
            ),
            "text_encoder": keras.saving.serialize_keras_object(
                self.text_encoder
            ),
            "projection_dim": self.projection_dim,
            "initial_temperature": self.initial_temperature,
            "max_logit_scale": self.max_logit_scale,
        }
        if self.image_converter is not None:
            config["image_converter"] = keras.saving.serialize_keras_object(
                self.image_converter
            )
        return config

    @classmethod
    def _from_loader(cls, loader, load_weights, **kwargs):
        return loader.load_lit(cls, load_weights, **kwargs)


def _check_templates(templates):
    if templates is None:
        return list(DEFAULT_TEMPLATES)
    if isinstance(templates, str) or not isinstance(templates, (list, tuple)):
        raise ValueError(
            "`templates` must be a list of strings with one '{}' each; got "
            f"{templates!r:.100}."
        )
    bad = [t for t in templates if not isinstance(t, str) or t.count("{}") != 1]
    if bad or not templates:
        raise ValueError(
            "`templates` must be a non-empty list of strings with exactly one "
            f"'{{}}' (where the class name goes) each; got {bad[:3]!r}."
        )
    return list(templates)
