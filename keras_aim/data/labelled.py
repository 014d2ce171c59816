"""Labelled image sets from any source, for probes, fine-tuning, evaluation.

`labelled_images(source, split, ...)` gives the same object for every
source the example scripts take:

- `"digits"`, `"photos"`: the built-in sets (`probe_dataset`), in memory.
- an image folder in the ImageNet layout: one sub-folder per class (the
  sorted folder names are the labels), optionally with `train/` and
  `val/` (or `validation/`, `test/`) split folders; without them, a seeded
  per-class split; `split="all"` takes every image (an ImageNet validation
  folder, say).
- `"tfds:NAME[:SPLIT]"`: a prepared tensorflow-datasets dataset.

Folder and tfds images are decoded by Pillow, as the release decodes them
(`keras_aim.data.decoding`), and go through an `AIMImageConverter`'s
transform (the model's own), so a classifier sees what its `predict` would
feed it, and the release's pixels.
Unreadable files are skipped with a warning: empty or non-image files when
the set is built, files that fail to decode when they are read (counted,
and named by `check_decoded`).
"""

import dataclasses
import os

import numpy as np

from keras_aim.data.builtin import sample_photos
from keras_aim.data.common import RELEASE_IMAGE_SIZE
from keras_aim.data.common import TEST_FRACTION
from keras_aim.data.common import check_fraction
from keras_aim.data.common import import_tensorflow
from keras_aim.data.decoding import read_and_convert
from keras_aim.data.pipelines import probe_dataset
from keras_aim.data.sources import find_undecodable
from keras_aim.data.sources import list_image_files
from keras_aim.data.sources import load_tfds_for_evaluation
from keras_aim.data.sources import parse_tfds
from keras_aim.data.sources import readable_files
from keras_aim.data.sources import warn_skipped
from keras_aim.models.aim.aim_image_converter import AIMImageConverter
from keras_aim.models.aim.aim_image_converter import default_image_converter

LABELLED_SPLITS = ("train", "test", "all")
TEST_FOLDERS = ("val", "validation", "test")


@dataclasses.dataclass
class LabelledImages:
    """A labelled split of images.

    Attributes:
        dataset: an unbatched `tf.data.Dataset` of `(image, label)`:
            float32 `(H, W, 3)` normalised images and int32 labels, in a
            fixed order.
        num_examples: the number of examples (before decode failures).
        class_names: the label names, label `i` is `class_names[i]`.
        source: the source it came from.
        split: `"train"`, `"test"` or `"all"`.
        skipped: `[(path, reason)]` of the files skipped so far.
        files: the image files in order (folders), else `None`.
        arrays: `(images, labels)` NumPy arrays when held in memory.
        empty_classes: class sub-folders of a folder left out of
            `class_names` for holding no images (none when `class_names`
            were given: those label every sub-folder).
    """

    dataset: object
    num_examples: int
    class_names: list
    source: str
    split: str
    skipped: list = dataclasses.field(default_factory=list)
    files: list | None = None
    arrays: tuple | None = None
    empty_classes: list = dataclasses.field(default_factory=list)

    @property
    def num_classes(self):
        return len(self.class_names)

    def batches(self, batch_size):
        """The dataset in batches, order kept, with prefetching."""
        tf = import_tensorflow()
        return self.dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def to_arrays(self):
        """`(images, labels)` in memory (reads the whole set once)."""
        if self.arrays is None:
            images, labels = [], []
            for x, y in self.batches(256):
                images.append(np.asarray(x))
                labels.append(np.asarray(y))
            self.check_decoded(sum(len(y) for y in labels))
            if not labels:
                raise ValueError(
                    f"No image of {self.source!r} ({self.split}) could be read."
                )
            self.arrays = (np.concatenate(images), np.concatenate(labels))
        return self.arrays

    def check_decoded(self, count):
        """Names the files that failed to decode if `count` came up short.

        Returns:
            The files found undecodable (also added to `skipped`).
        """
        if count >= self.num_examples or not self.files:
            return []
        bad = find_undecodable(self.files, decoder="pillow")
        if bad:
            warn_skipped(bad, f"images of {self.source!r}")
            self.skipped.extend(bad)
        return bad


def labelled_images(
    source,
    split,
    image_size=None,
    image_converter=None,
    seed=0,
    test_fraction=TEST_FRACTION,
    data_dir=None,
    crops_per_image=64,
    image_key="image",
    label_key="label",
    class_names=None,
):
    """Returns a `LabelledImages` split of `source` (see the module doc).

    Args:
        source: `"digits"`, `"photos"`, `"tfds:NAME[:SPLIT]"` or a folder.
        split: `"train"`, `"test"` or `"all"` (folders and tfds only).
        image_size: int, the side of the built-in images; defaults to the
            converter's crop, else 16 (digits) or 32 (photos).
        image_converter: the `AIMImageConverter` for folders and tfds;
            defaults to the release's transform at `image_size` (224).
        seed: int, seeds the folder split and the photo crops.
        test_fraction: float, the test share of an unsplit folder.
        data_dir: tensorflow-datasets data folder.
        crops_per_image: int, crops per photo (`"photos"`).
        image_key: the image feature of a tfds dataset.
        label_key: the label feature of a tfds dataset.
        class_names: the label names a model was trained with (label `i`
            is `class_names[i]`), or `None` to take the source's own. A
            folder's class sub-folders are then labelled by name: a
            sub-folder that is not named, or a name without a sub-folder,
            is a `ValueError` (a sub-folder without images is a class
            with no images); a built-in or tfds set must have exactly
            these names.

    Example:

    >>> test = labelled_images("digits", "test")
    >>> test.num_examples, test.num_classes
    (539, 10)
    """
    if split not in LABELLED_SPLITS:
        raise ValueError(
            f"`split` must be one of {LABELLED_SPLITS}; got split={split!r}."
        )
    check_fraction(test_fraction)
    if image_converter is not None and not isinstance(
        image_converter, AIMImageConverter
    ):
        raise ValueError(
            "`image_converter` must be a keras_aim.AIMImageConverter; got "
            f"{type(image_converter).__name__}."
        )
    if image_size is None and image_converter is not None:
        crop = image_converter.crop_size
        image_size = None if crop is None else int(crop[0])
    if not isinstance(source, (str, os.PathLike)):
        raise ValueError(
            "`source` must be 'digits', 'photos', 'tfds:NAME[:SPLIT]' or an "
            f"image folder; got {source!r}."
        )
    source = os.fspath(source)
    if source in ("digits", "photos"):
        if split == "all":
            raise ValueError(
                f"{source!r} has train and test splits only; got split='all'."
            )
        return _named(
            _builtin(source, split, image_size, seed, crops_per_image),
            class_names,
        )
    if image_converter is None:
        size = image_size or RELEASE_IMAGE_SIZE
        image_converter = default_image_converter((size, size, 3))
    if source.startswith("tfds:"):
        return _named(
            _tfds(
                source, split, image_converter, data_dir, image_key, label_key
            ),
            class_names,
        )
    if os.path.isdir(source):
        return _folder(
            source, split, image_converter, seed, test_fraction, class_names
        )
    raise ValueError(
        "`source` must be 'digits', 'photos', 'tfds:NAME[:SPLIT]' or an "
        f"existing image folder; got source={source!r}."
    )


def _builtin(source, split, image_size, seed, crops_per_image):
    tf = import_tensorflow()
    kwargs = {"image_size": image_size, "seed": seed}
    if source == "photos":
        kwargs["crops_per_image"] = crops_per_image
        names = [name for name, _ in sample_photos()]
    else:
        names = [str(i) for i in range(10)]
    images, labels = probe_dataset(source, split, **kwargs)
    labels = labels.astype("int32")
    return LabelledImages(
        dataset=tf.data.Dataset.from_tensor_slices((images, labels)),
        num_examples=len(labels),
        class_names=names,
        source=source,
        split=split,
        arrays=(images, labels),
    )


def _check_names(class_names):
    if class_names is None:
        return None
    if isinstance(class_names, (str, bytes)) or not all(
        isinstance(n, str) and n for n in class_names
    ):
        raise ValueError(
            "`class_names` must be a list of non-empty strings or None; got "
            f"{class_names!r:.200}."
        )
    names = list(class_names)
    if len(set(names)) != len(names):
        raise ValueError("`class_names` names a class more than once.")
    return names


def _named(images, class_names):
    """Checks a built-in or tfds set's own names against `class_names`."""
    names = _check_names(class_names)
    own = list(images.class_names)
    if names is not None and own != names:
        differ = next(
            (i for i, (a, b) in enumerate(zip(own, names)) if a != b),
            min(len(own), len(names)),
        )
        raise ValueError(
            f"{images.source!r} has {images.num_classes} classes "
            f"{_listing(images.class_names)} but the model's {len(names)} "
            f"classes are {_listing(names)} (first difference at label "
            f"{differ}): its labels would mean other classes."
        )
    return images


def _listing(names, count=4):
    shown = ", ".join(repr(n) for n in names[:count])
    return f"[{shown}{', ...' if len(names) > count else ''}]"


def _class_names(root):
    if not os.path.isdir(root):
        return []
    return sorted(
        name
        for name in os.listdir(root)
        if os.path.isdir(os.path.join(root, name))
        and list_image_files(os.path.join(root, name))
    )


def _class_folders(root):
    """Every class sub-folder of `root`: with images, or not hidden."""
    if not os.path.isdir(root):
        return []
    return sorted(
        name
        for name in os.listdir(root)
        if os.path.isdir(os.path.join(root, name))
        and (
            not name.startswith(".")
            or list_image_files(os.path.join(root, name))
        )
    )


def _match_folders(root, class_names):
    """`class_names` checked against the class sub-folders of `root`."""
    folders = _class_folders(root)
    extra = sorted(set(folders) - set(class_names))
    missing = [n for n in class_names if n not in set(folders)]
    if extra or missing:
        problems = []
        if extra:
            problems.append(
                f"sub-folders that are not classes of the model: "
                f"{_listing(extra)}"
            )
        if missing:
            problems.append(
                f"no sub-folder for the model's classes {_listing(missing)}"
            )
        raise ValueError(
            f"The class folders of {root!r} do not match the model's "
            f"{len(class_names)} classes: {'; '.join(problems)}. Labels "
            "are matched by folder name; rename the folders (an empty "
            "folder stands for a class without images)."
        )


def _folder_split(folder, split, seed, test_fraction, class_names=None):
    """`(files, labels, class_names, root)` of a split of an ImageNet-layout
    tree; the names are `class_names` when given (checked against it)."""
    test_root = next(
        (
            os.path.join(folder, name)
            for name in TEST_FOLDERS
            if os.path.isdir(os.path.join(folder, name))
        ),
        None,
    )
    train_root = os.path.join(folder, "train")
    presplit = os.path.isdir(train_root) or test_root is not None
    if split == "all":
        root, presplit = folder, False
        names = _class_names(folder)
    elif presplit:
        root = train_root if split == "train" else test_root
        if root is None or not os.path.isdir(root):
            raise ValueError(
                f"`source`={folder!r} has split folders but none for "
                f"split={split!r} (expected train/ and one of {TEST_FOLDERS})."
            )
        names = _class_names(train_root) or _class_names(root)
    else:
        root = folder
        names = _class_names(folder)
    if class_names is not None:
        names = class_names
        _match_folders(root, names)
    if not names:
        raise ValueError(
            f"`source`={folder!r} needs one sub-folder of images per class "
            "(the ImageNet layout, optionally under train/ and val/); found "
            "none with images."
        )
    extra = sorted(set(_class_names(root)) - set(names))
    if extra:
        raise ValueError(
            f"The {split} folder {root!r} has classes the train folder does "
            f"not: {extra[:5]}."
        )
    rng = np.random.RandomState(seed)
    files, labels = [], []
    for label, name in enumerate(names):
        class_files = list_image_files(os.path.join(root, name))
        if not presplit and split != "all":
            order = rng.permutation(len(class_files))
            num_test = int(round(len(class_files) * test_fraction))
            chosen = order[num_test:] if split == "train" else order[:num_test]
            class_files = [class_files[i] for i in sorted(chosen)]
        files.extend(class_files)
        labels.extend([label] * len(class_files))
    return files, labels, names, root


def _folder(folder, split, converter, seed, test_fraction, class_names=None):
    tf = import_tensorflow()
    files, labels, names, root = _folder_split(
        folder, split, seed, test_fraction, _check_names(class_names)
    )
    label_of = dict(zip(files, labels))
    kept, skipped = readable_files(files, f"images in {folder!r}")
    if not kept:
        raise ValueError(
            f"The {split} split of `source`={folder!r} has no readable images "
            f"({len(skipped)} skipped)."
        )
    kept_labels = np.asarray([label_of[f] for f in kept], "int32")

    def read(path, label):
        return read_and_convert(path, converter), label

    dataset = tf.data.Dataset.from_tensor_slices((kept, kept_labels))
    dataset = dataset.map(read, num_parallel_calls=tf.data.AUTOTUNE)
    # A file that fails to decode is dropped here and named afterwards by
    # `check_decoded`, so one bad image never stops a pass.
    dataset = dataset.ignore_errors()
    return LabelledImages(
        dataset=dataset,
        num_examples=len(kept),
        class_names=names,
        source=folder,
        split=split,
        skipped=skipped,
        files=kept,
        empty_classes=sorted(set(_class_folders(root)) - set(names)),
    )


def _tfds(source, split, converter, data_dir, image_key, label_key):
    tf = import_tensorflow()
    name, given = parse_tfds(source)
    if split == "train":
        candidates = ["train"]
    else:
        candidates = [given] if given else ["test", "validation"]
    error = None
    for tfds_split in candidates:
        try:
            dataset, convert = load_tfds_for_evaluation(
                name, tfds_split, data_dir, image_key, converter
            )
            break
        except ValueError as e:
            error = e
    else:
        raise error
    import tensorflow_datasets as tfds

    info = tfds.builder(name, data_dir=data_dir).info
    feature = info.features[label_key]
    names = list(getattr(feature, "names", None) or [])
    if not names:
        names = [str(i) for i in range(int(feature.num_classes))]
    dataset = dataset.map(
        lambda example: (
            convert(example[image_key]),
            tf.cast(example[label_key], tf.int32),
        ),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return LabelledImages(
        dataset=dataset,
        num_examples=int(info.splits[tfds_split].num_examples),
        class_names=names,
        source=source,
        split=split,
    )
