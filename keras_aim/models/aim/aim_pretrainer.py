"""AIM pre-training: the trunk, the pixel head and the next-patch objective."""

import keras
import numpy as np
from keras import ops

from keras_aim.distribution import layout
from keras_aim.layers.masks import check_prefix_sampling
from keras_aim.layers.masks import prefix_causal_mask
from keras_aim.layers.masks import sample_prefix_lengths
from keras_aim.layers.pixel_head import AIMPixelHead
from keras_aim.layers.token_orders import TOKEN_ORDERS
from keras_aim.layers.token_orders import token_order as make_token_order
from keras_aim.losses import next_patch_pixel_loss
from keras_aim.losses import next_patch_reconstruction
from keras_aim.models.backbone import Backbone
from keras_aim.models.base import AIMModelBase
from keras_aim.utils import validation
from keras_aim.utils.validation import check_image_shape
from keras_aim.utils.validation import check_image_values
from keras_aim.utils.validation import check_prefix_lengths
from keras_aim.utils.validation import check_prefix_range

ATTENTION_MODES = ("prefix", "causal")

# Seed of the prefix lengths drawn outside training (`evaluate`, `predict`),
# so that evaluating the same weights on the same data gives the same loss.
EVALUATION_SEED = 20240115
SEED_STATE_KEY = "prefix_seed_state"


@keras.saving.register_keras_serializable(package="keras_aim")
class AIMPretrainer(AIMModelBase, keras.Model):
    """Pre-trains an `AIMBackbone` with AIM's next-patch pixel objective.

    El-Nouby et al., "Scalable Pre-training of Large Autoregressive Image
    Models" (ICML 2024). Each training step draws one prefix length `K` per
    image, uniformly in `prefix_range` (default `[1, N - 1]` for `N`
    patches), runs the trunk with prefix-causal attention (token `i` sees
    token `j` when `j <= i` or `j < K`), maps the tokens to pixels with an
    `AIMPixelHead` and regresses patch `i + 1` from output `i`, on the
    per-patch-normalised pixels of every patch that is not in the prefix
    (`keras_aim.losses.next_patch_pixel_loss`). The backbone's weights are
    shared: after pre-training, use `backbone` bidirectionally as usual.

    `compile(optimizer=...)` then `fit(images)` train it on any backend;
    `fit` takes float image arrays, or a `tf.data.Dataset` yielding image
    batches, `(images, labels)` pairs (labels are ignored) or
    `{"images": ...}` dicts. Outside training (`evaluate`, `predict`) the
    prefix lengths come from a fixed seed, so the same weights and data
    give the same loss. Calling the model returns a dict with
    `"predictions"` `(B, N, p * p * C)` and the `"prefix_lengths"` `(B,)`
    used.

    Args:
        backbone: a `keras_aim.AIMBackbone`, or a `keras_aim.AIMv2Backbone`
            (its trunk, pre-trained further with AIM's objective).
        head_hidden_dim: int, pixel-head width. Defaults to 2048 (paper).
        head_num_layers: int, residual MLP blocks of the pixel head; 0 gives
            the paper's "linear" head (see `AIMPixelHead`). Defaults to 12.
        prefix_range: `(low, high)`, inclusive range of the prefix length,
            with `1 <= low <= high <= N - 1`. Defaults to `(1, N - 1)`
            for the image size seen (checked when the images arrive if the
            backbone accepts any size).
        attention: `"prefix"` (prefix-causal, the paper's default) or
            `"causal"` (plain causal attention, prefix length 0: the paper's
            causal ablation; the loss then covers patches `1..N-1`).
            Bidirectional attention cannot be used: output `i` would see
            the patch it predicts. Defaults to `"prefix"`.
        prefix_sampling: `"image"` (one prefix length per image, the
            paper) or `"batch"` (one per training batch, shared by every
            image and replica: what a flash kernel with one block mask per
            batch, such as TPU Splash, would need; see
            docs/accelerators.md). Evaluation always draws per image.
            Defaults to `"image"`.
        normalize_targets: bool, normalise each target patch by its mean
            and unbiased variance. Defaults to `True`.
        token_order: `"raster"`, `"spiral"`, `"checkerboard"` or `"random"`
            (see `keras_aim.layers.token_orders.token_order`): the order in
            which patches are fed and predicted. The permutation is applied
            to the trunk tokens (after their position embedding), to the
            head's position
            embedding and to the targets; the prefix is the first `K`
            patches of that order. Defaults to `"raster"`.
        token_order_seed: int, seed of the fixed `"random"` order.
            Defaults to 0.
        seed: int or `None`, seed of the prefix-length generator; the same
            seed (and the same initial weights, e.g. after
            `keras.utils.set_random_seed`) gives the same training steps on
            a given backend. Defaults to `None`.
        dtype: dtype or `keras.DTypePolicy`; defaults to the backbone's.
        **kwargs: `keras.Model` arguments such as `name`.

    Example:

    >>> backbone = keras_aim.AIMBackbone(image_shape=(16, 16, 1),
    ...     patch_size=4, hidden_dim=32, num_layers=2, num_heads=2)
    >>> pretrainer = keras_aim.AIMPretrainer(backbone, head_hidden_dim=32,
    ...                                      head_num_layers=1, seed=0)
    >>> pretrainer.compile(optimizer="adamw")
    >>> images = np.random.default_rng(0).normal(size=(8, 16, 16, 1))
    >>> history = pretrainer.fit(images.astype("float32"), batch_size=4,
    ...                          epochs=1, verbose=0)
    >>> predictions = pretrainer.predict_next_patches(
    ...     images[:2].astype("float32"), prefix_lengths=[1, 8])
    >>> tuple(predictions.shape)
    (2, 16, 16)
    """

    def __init__(
        self,
        backbone,
        head_hidden_dim=2048,
        head_num_layers=12,
        prefix_range=None,
        attention="prefix",
        prefix_sampling="image",
        normalize_targets=True,
        token_order="raster",
        token_order_seed=0,
        seed=None,
        dtype=None,
        **kwargs,
    ):
        validation.check_model_kwargs(type(self), kwargs)
        if not isinstance(backbone, Backbone):
            raise ValueError(
                "`backbone` must be a keras_aim.AIMBackbone or AIMv2Backbone; "
                "got "
                f"{type(backbone).__name__}."
            )
        if attention == "bidirectional":
            raise ValueError(
                'attention="bidirectional" cannot be pre-trained with '
                "next-patch prediction: output i would attend to patch i + 1, "
                'the patch it predicts. Use "prefix" (the paper) or '
                '"causal"; the trained backbone is used bidirectionally '
                "afterwards without any change."
            )
        if attention not in ATTENTION_MODES:
            raise ValueError(
                f"`attention` must be one of {ATTENTION_MODES}; got "
                f"{attention!r}."
            )
        check_prefix_sampling(prefix_sampling)
        if token_order not in TOKEN_ORDERS:
            raise ValueError(
                f"`token_order` must be one of {TOKEN_ORDERS}; got "
                f"{token_order!r}."
            )
        if seed is not None and (
            isinstance(seed, bool) or not isinstance(seed, int)
        ):
            raise ValueError(f"`seed` must be an int or None; got {seed!r}.")
        if dtype is None:
            dtype = backbone.dtype_policy
        super().__init__(dtype=dtype, **kwargs)

        # === Layers ===
        self.backbone = backbone
        channels = backbone.image_shape[-1]
        self.pixel_head = AIMPixelHead(
            hidden_dim=head_hidden_dim,
            output_dim=backbone.patch_size**2 * channels,
            num_layers=head_num_layers,
            layer_norm_epsilon=backbone.layer_norm_epsilon,
            dtype=self.dtype_policy,
            name="pixel_head",
        )
        self.seed_generator = keras.random.SeedGenerator(
            seed, name="prefix_seed_generator"
        )

        # === Config ===
        self.head_hidden_dim = head_hidden_dim
        self.head_num_layers = head_num_layers
        self.prefix_range = check_prefix_range(prefix_range)
        self.attention = attention
        self.prefix_sampling = prefix_sampling
        self.normalize_targets = bool(normalize_targets)
        self.token_order = token_order
        self.token_order_seed = int(token_order_seed)
        self.seed = seed
        self._token_orders = {}
        # Set by keras_aim.distribution for data parallelism across
        # processes or replicas (torch, tf.distribute); `None` otherwise.
        self.replica_context = None

        height, width = backbone.image_shape[:2]
        if height is not None and width is not None:
            self.prefix_range_for(backbone.num_patches(height, width))
        # Built here (outside the model's name scope) so that the head's
        # variable paths read "pixel_head/...", like the backbone's.
        self.pixel_head.build((None, None, backbone.hidden_dim))
        self.build((None,) + tuple(backbone.image_shape))

    def build(self, input_shape=None):
        if not self.pixel_head.built:
            self.pixel_head.build((None, None, self.backbone.hidden_dim))

    @property
    def patch_size(self):
        return self.backbone.patch_size

    def prefix_range_for(self, num_patches):
        """The inclusive `(low, high)` prefix range for `num_patches` tokens.

        Raises a `ValueError` unless `1 <= low <= high <= num_patches - 1`.
        """
        num_patches = int(num_patches)
        if num_patches < 2:
            raise ValueError(
                "Next-patch pre-training needs at least 2 patches per image; "
                f"got {num_patches} (patch_size={self.patch_size})."
            )
        if self.prefix_range is None:
            return 1, num_patches - 1
        low, high = self.prefix_range
        if not 1 <= low <= high <= num_patches - 1:
            raise ValueError(
                f"`prefix_range`={self.prefix_range} is not valid for "
                f"{num_patches} patches: it needs 1 <= low <= high <= "
                f"N - 1 = {num_patches - 1}."
            )
        return low, high

    def token_order_indices(self, grid_h, grid_w):
        """The `(grid_h * grid_w,)` permutation in use, or `None` (raster)."""
        if self.token_order == "raster":
            return None
        key = (int(grid_h), int(grid_w))
        if key not in self._token_orders:
            self._token_orders[key] = make_token_order(
                self.token_order, *key, seed=self.token_order_seed
            )
        return self._token_orders[key]

    def predict_next_patches(self, images, prefix_lengths):
        """Predicts every next patch under prefix-causal attention.

        Args:
            images: `(B, H, W, C)` normalised float images; H and W divisible
                by the patch size.
            prefix_lengths: int `(B,)` (or one int for all), prefix length
                `K` of each image; 0 or 1 give plain causal attention.

        Returns:
            `(B, N, p * p * C)` predictions in the model's compute dtype.
            Row `i` predicts patch `i + 1` of the sequence (in
            `token_order`); with `normalize_targets=True` they are in units
            of each patch's own normalisation. The last row predicts
            nothing and is not used by the loss.
        """
        images = self._check_images(images)
        grid_h, grid_w = self._grid(images)
        check_prefix_lengths(
            prefix_lengths, grid_h * grid_w, batch_size=images.shape[0]
        )
        batch = ops.shape(images)[0]
        prefix_lengths = ops.cast(
            ops.convert_to_tensor(prefix_lengths), "int32"
        )
        if len(prefix_lengths.shape) == 0:
            prefix_lengths = ops.broadcast_to(prefix_lengths, (batch,))
        return self._predict(images, prefix_lengths)

    def reconstruct(self, images, prefix_lengths):
        """Images rebuilt from the next-patch predictions, for inspection.

        Patches of the prefix (and the first patch, which has no
        prediction) are copied from `images`; every other patch is its
        prediction, de-normalised with the statistics of the true patch
        when `normalize_targets` is on (as MAE does for display).

        Args:
            images: `(B, H, W, C)` normalised float images.
            prefix_lengths: int `(B,)` or int.

        Returns:
            `(B, H, W, C)` float32 images in the input's normalisation.
        """
        images = self._check_images(images)
        grid_h, grid_w = self._grid(images)
        return next_patch_reconstruction(
            images,
            self.predict_next_patches(images, prefix_lengths),
            prefix_lengths,
            self.patch_size,
            self.normalize_targets,
            self.token_order_indices(grid_h, grid_w),
            grid_size=(grid_h, grid_w),
        )

    def call(self, images, training=False):
        images = self._check_images(images)
        grid_h, grid_w = self._grid(images)
        batch = ops.shape(images)[0]
        if self.attention == "causal":
            prefix_lengths = ops.zeros((batch,), "int32")
        else:
            low, high = self.prefix_range_for(grid_h * grid_w)
            # Outside training: per image, from a fixed seed (comparable).
            prefix_lengths = sample_prefix_lengths(
                batch,
                low,
                high,
                self.seed_generator if training else EVALUATION_SEED,
                replica=self.replica_context,
                per=self.prefix_sampling if training else "image",
            )
        predictions = self._predict(images, prefix_lengths)
        return {"predictions": predictions, "prefix_lengths": prefix_lengths}

    def compute_loss(
        self, x=None, y=None, y_pred=None, sample_weight=None, training=True
    ):
        if sample_weight is not None:
            raise ValueError(
                "AIMPretrainer does not support `sample_weight`: the loss is "
                "the mean over all non-prefix target patches of the batch."
            )
        images = self._check_images(x)
        if y_pred is None:
            y_pred = self(images, training=training)
        if not isinstance(y_pred, dict) or "predictions" not in y_pred:
            raise ValueError(
                "AIMPretrainer.compute_loss expects the dict returned by "
                "calling the pretrainer (keys 'predictions', "
                f"'prefix_lengths'); got {type(y_pred).__name__}."
            )
        grid_h, grid_w = self._grid(images)
        total, count = next_patch_pixel_loss(
            images,
            y_pred["predictions"],
            y_pred["prefix_lengths"],
            self.patch_size,
            normalize_targets=self.normalize_targets,
            token_order=self.token_order_indices(grid_h, grid_w),
            return_terms=True,
        )
        replica = self.replica_context
        if replica is None:
            loss = total / ops.maximum(count, 1.0)
        else:
            loss = replica.pooled_loss(total, count)
        for extra in self.losses:
            loss = loss + ops.cast(extra, "float32")
        return loss

    def compile(self, optimizer="adamw", loss=None, **kwargs):
        """Like `keras.Model.compile`; the loss is built in, so `loss=None`.

        `keras_aim.optimizers.pretraining_optimizer` gives the paper's
        AdamW recipe.
        """
        if loss is not None:
            raise ValueError(
                "AIMPretrainer computes its own next-patch loss; call "
                f"compile() without `loss` (got loss={loss!r})."
            )
        super().compile(optimizer=optimizer, **kwargs)

    def save_own_variables(self, store):
        # The prefix-length stream is saved too, so that a reloaded model
        # continues it instead of replaying the first draws.
        super().save_own_variables(store)
        store[SEED_STATE_KEY] = ops.convert_to_numpy(self.seed_generator.state)

    def load_own_variables(self, store):
        keys = list(store.keys())
        if SEED_STATE_KEY in keys:
            self.seed_generator.state.assign(store[SEED_STATE_KEY])
        super().load_own_variables(
            {key: store[key] for key in keys if key != SEED_STATE_KEY}
        )

    def compile_from_config(self, config):
        # Keras skips this for models with their own `compile`; without it a
        # loaded `.keras` file would come back without its optimizer state.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _predict(self, images, prefix_lengths):
        grid_h, grid_w = self._grid(images)
        num = grid_h * grid_w
        order = self.token_order_indices(grid_h, grid_w)
        mask = prefix_causal_mask(prefix_lengths, num)
        tokens = self.backbone.encode(
            images, attention_mask=mask, token_order=order
        )
        return self.pixel_head(
            tokens, grid_size=(grid_h, grid_w), token_order=order
        )

    def _grid(self, images):
        p = self.patch_size
        height, width = images.shape[1], images.shape[2]
        built_h, built_w = self.backbone.image_shape[:2]
        height = built_h if height is None else height
        width = built_w if width is None else width
        if height is None or width is None:
            raise ValueError(
                "AIMPretrainer needs images with a static height and width "
                f"(the patch grid sets the attention mask); got shape "
                f"{tuple(images.shape)}. Give the dataset a fixed image size."
            )
        return height // p, width // p

    def fit(self, x=None, y=None, *args, **kwargs):
        self._check_data(x)
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_data(x)
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._check_data(x)
        return super().predict(x, *args, **kwargs)

    def _check_data(self, x):
        """Checks arrays and `tf.data` specs before Keras starts a loop.

        A step that fails mid-trace can leave the trainer's state half
        swapped (JAX), so bad data is refused up front where its shape
        and dtype are known; other inputs are checked in `call`.
        """
        spec = getattr(x, "element_spec", None)
        if spec is not None:
            if isinstance(spec, (tuple, list)) and spec:
                spec = spec[0]
            self._check_images(spec)
        elif isinstance(x, dict) or (
            hasattr(x, "shape") and hasattr(x, "dtype")
        ):
            self._check_images(x)

    def _check_images(self, images):
        """Returns the image tensor of `images`; raises on bad input.

        Also accepts anything with `shape` and `dtype` (a `tf.TensorSpec`).
        """
        if isinstance(images, dict):
            if "images" not in images:
                raise ValueError(
                    "A dict of inputs must hold the images under the key "
                    f"'images'; got keys {sorted(images)}."
                )
            images = images["images"]
        if isinstance(images, (tuple, list)):
            raise ValueError(
                "AIMPretrainer expects a batch of images (B, H, W, C); got a "
                f"{type(images).__name__}. A dataset should yield images, "
                "(images, labels) pairs or {'images': images} dicts."
            )
        if not hasattr(images, "shape") or not hasattr(images, "dtype"):
            images = np.asarray(images)
        dtype = keras.backend.standardize_dtype(images.dtype)
        if "float" not in dtype:
            raise ValueError(
                f"AIMPretrainer expects float images; got dtype {dtype}. "
                "Convert raw images to float and normalise them with the "
                "ImageNet mean and std first (e.g. keras_aim."
                "AIMImageConverter, or (x / 255 - mean) / std)."
            )
        check_image_values(images)
        check_image_shape(
            images.shape, self.patch_size, self.backbone.image_shape[-1]
        )
        return images

    # The layout of every keras_aim weight (see keras_aim.distribution):
    # `get_layout_map(device_mesh, model_parallel_dim_name="model",
    # data_parallel_dim_name="batch")`, a static method as in keras-hub.
    get_layout_map = staticmethod(layout.get_layout_map)

    nested_config_objects = ("backbone",)

    def get_config(self):
        return {
            **self._base_config(),
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "head_hidden_dim": self.head_hidden_dim,
            "head_num_layers": self.head_num_layers,
            "prefix_range": (
                None if self.prefix_range is None else list(self.prefix_range)
            ),
            "attention": self.attention,
            "prefix_sampling": self.prefix_sampling,
            "normalize_targets": self.normalize_targets,
            "token_order": self.token_order,
            "token_order_seed": self.token_order_seed,
            "seed": self.seed,
        }
