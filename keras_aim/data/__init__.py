"""tf.data input pipelines for AIM pre-training, probing and evaluation.

TensorFlow's `tf.data` feeds every Keras backend; this is the one module of
keras_aim that uses TensorFlow directly, and it imports it lazily, so
`import keras_aim` works without it.

Sources, all offline:

- `"digits"`: scikit-learn's 1,797 handwritten digits (8x8 grey, 10
  classes), upsampled and replicated to RGB.
- `"photos"`: the 21 real photos that ship inside scikit-image
  (`skimage/data`) and scikit-learn (`china.jpg`, `flower.jpg`). Random
  crops give an unlimited stream of natural-image patches; "which photo is
  this crop from", with train and test crops from disjoint regions, is a
  labelled probe task.
- `"tfds:NAME[:SPLIT]"`: a prepared tensorflow-datasets dataset (never
  downloaded here; prepare it first and pass `data_dir`).
- a folder path: images (jpg, jpeg, png, bmp) found recursively; for probes
  and labelled evaluation, one subfolder per class.

All pipelines work on pixel values in [0, 255] and end with the ImageNet
normalisation `(x / 255 - mean) / std` that the AIM models expect.
Randomness is stateless and derived from `seed` and the element's position
in the stream, so a pipeline gives the same batches for the same seed.
"""

from keras_aim.data.augment import CROP_MODES
from keras_aim.data.augment import evaluation_transform
from keras_aim.data.augment import normalize
from keras_aim.data.augment import pretraining_augment
from keras_aim.data.augment import random_color_jitter
from keras_aim.data.augment import random_crop
from keras_aim.data.augment import random_resized_crop
from keras_aim.data.augment import random_shift
from keras_aim.data.builtin import SKIMAGE_PHOTOS
from keras_aim.data.builtin import SKLEARN_PHOTOS
from keras_aim.data.builtin import SPLIT_SEED
from keras_aim.data.builtin import digits_split_indices
from keras_aim.data.builtin import load_digits_images
from keras_aim.data.builtin import load_sample_photos
from keras_aim.data.builtin import photo_crop_boxes
from keras_aim.data.builtin import photo_region
from keras_aim.data.builtin import resized_photos
from keras_aim.data.common import DEFAULT_IMAGE_SIZES
from keras_aim.data.common import SPLITS
from keras_aim.data.common import TEST_FRACTION
from keras_aim.data.common import default_image_size
from keras_aim.data.evaluation import evaluation_dataset
from keras_aim.data.labelled import LabelledImages
from keras_aim.data.labelled import labelled_images
from keras_aim.data.pipelines import pretraining_dataset
from keras_aim.data.pipelines import probe_dataset
from keras_aim.data.sources import IMAGE_EXTENSIONS
from keras_aim.data.sources import list_image_files

__all__ = [
    "DEFAULT_IMAGE_SIZES",
    "default_image_size",
    "digits_split_indices",
    "resized_photos",
    "CROP_MODES",
    "IMAGE_EXTENSIONS",
    "LabelledImages",
    "SKIMAGE_PHOTOS",
    "SKLEARN_PHOTOS",
    "SPLITS",
    "SPLIT_SEED",
    "TEST_FRACTION",
    "evaluation_dataset",
    "evaluation_transform",
    "labelled_images",
    "list_image_files",
    "load_digits_images",
    "load_sample_photos",
    "normalize",
    "photo_crop_boxes",
    "photo_region",
    "pretraining_augment",
    "pretraining_dataset",
    "probe_dataset",
    "random_color_jitter",
    "random_crop",
    "random_resized_crop",
    "random_shift",
]
