"""`ReconstructionGrid`: held-out images next to their next-patch
predictions every few epochs, in any `fit` loop of an `AIMPretrainer`."""

import os

import keras
import numpy as np

from keras_aim.callbacks.step_logger import optimizer_step
from keras_aim.models.aim.aim_image_converter import IMAGENET_MEAN
from keras_aim.models.aim.aim_image_converter import IMAGENET_STD
from keras_aim.utils.plots import plot_next_patch_grid
from keras_aim.utils.validation import positive_int


class ReconstructionGrid(keras.callbacks.Callback):
    """Saves a PNG of `original | next-patch prediction` pairs.

    Every `every` epochs the model (an `AIMPretrainer`) rebuilds `images`
    from its next-patch predictions (`AIMPretrainer.reconstruct`: each
    predicted patch de-normalised with the statistics of the patch it
    predicts, prefix patches copied) and the pairs are drawn to
    `path`, which may hold `{epoch}` and `{step}` placeholders (one file per
    call) or not (the file is replaced each time).

    Args:
        images: `(B, H, W, C)` normalised float images, ideally held out.
        path: the PNG to write, e.g. `"run/reconstructions_{step:06d}.png"`.
        every: int, epochs between grids. Defaults to 1.
        prefix_lengths: int or `(B,)` prefix length(s) of the predictions;
            1 gives the causal view. Defaults to 1.
        mean: the normalisation mean to undo for display (ImageNet's).
        std: the normalisation std to undo for display (ImageNet's).
        title: the figure title; `{epoch}` and `{step}` are filled in.
            Defaults to `"epoch {epoch}: original | next-patch prediction"`.

    Example:

    ```python
    grid = keras_aim.callbacks.ReconstructionGrid(
        held_out[:8], "run/reconstructions_{epoch:03d}.png", every=5)
    pretrainer.fit(dataset, epochs=50, steps_per_epoch=20, callbacks=[grid])
    ```
    """

    def __init__(
        self,
        images,
        path,
        every=1,
        prefix_lengths=1,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        title="epoch {epoch}: original | next-patch prediction",
    ):
        super().__init__()
        images = np.asarray(images)
        if images.ndim != 4 or images.dtype.kind != "f" or not len(images):
            raise ValueError(
                "`images` must be a non-empty float batch (B, H, W, C) of "
                f"normalised images; got shape {images.shape} and dtype "
                f"{images.dtype}."
            )
        if not isinstance(path, (str, os.PathLike)) or not str(path):
            raise ValueError(f"`path` must be a file path; got {path!r}.")
        self.images = images
        self.path = os.fspath(path)
        self.every = positive_int(every, "every")
        self.prefix_lengths = prefix_lengths
        self.mean = mean
        self.std = std
        self.title = title
        self.written = []

    def set_model(self, model):
        if not hasattr(model, "reconstruct"):
            raise ValueError(
                "ReconstructionGrid needs a keras_aim.AIMPretrainer (a model "
                f"with `reconstruct`); got {type(model).__name__}."
            )
        super().set_model(model)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        reconstructions = keras.ops.convert_to_numpy(
            self.model.reconstruct(self.images, self.prefix_lengths)
        )
        names = {"epoch": epoch + 1, "step": optimizer_step(self.model)}
        path = self.path.format(**names)
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        plot_next_patch_grid(
            self.images,
            reconstructions,
            path,
            mean=self.mean,
            std=self.std,
            title=self.title.format(**names),
        )
        self.written.append(path)
