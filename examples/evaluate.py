"""Evaluate an AIM classifier: top-1 / top-5 and a confusion matrix.

    python examples/evaluate.py --preset=runs/probe/classifier --dataset=digits
    python examples/evaluate.py --preset=aim_600m --dataset=/data/imagenet/val

The release's ImageNet protocol: images go through the classifier's own
converter (for the released presets: short side 256, bicubic, centre crop
224, ImageNet mean and std) and the released head (`--probe_layers=best`
or `last`). A folder without `train/`/`val/` sub-folders is evaluated
whole, its sorted class folders being labels 0..C-1 (the ImageNet order
for a validation folder in the ImageNet layout). Published top-1 (best /
last): 79.4 / 78.5 (aim_600m), 82.3 / 80.6 (1b), 83.3 / 82.2 (3b),
84.0 / 82.4 (7b).

Writes `metrics.json` (`top1`, `top5`, `num_test`) and `confusion.png`.
"""

import os
import sys
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import example_utils  # noqa: E402


def define_flags():
    """Defines the flags (only when run as a script: the tests import it)."""
    flags.DEFINE_string("preset", None, "Classifier preset: name or folder.")
    flags.DEFINE_string(
        "dataset", "digits", "digits, photos, tfds:NAME[:SPLIT] or a folder."
    )
    flags.DEFINE_string(
        "probe_layers",
        None,
        "For released presets: best or last (which released head).",
    )
    flags.DEFINE_enum(
        "split", "auto", ["auto", "train", "test", "all"], "Split to evaluate."
    )
    flags.DEFINE_integer("batch_size", 64, "Images per forward pass.")
    flags.DEFINE_string(
        "output_dir", "runs/evaluate", "Where to write results."
    )


FLAGS = flags.FLAGS


def run(
    preset,
    dataset="digits",
    probe_layers=None,
    split="auto",
    batch_size=64,
    output_dir="runs/evaluate",
    verbose=1,
):
    """Evaluates the classifier; returns the metrics dict."""
    output_dir = example_utils.output_folder(output_dir)
    import keras_aim
    from keras_aim import data
    from keras_aim import probing
    from keras_aim.models.aim.aim_image_converter import default_image_converter

    if not preset:
        raise ValueError("--preset is required (a classifier preset).")
    kwargs = {} if probe_layers is None else {"probe_layers": probe_layers}
    classifier = keras_aim.AIMImageClassifier.from_preset(preset, **kwargs)
    converter = classifier.image_converter or default_image_converter(
        classifier.backbone.image_shape
    )
    split = example_utils.split_for(dataset, split)
    test = data.labelled_images(dataset, split, image_converter=converter)
    if test.num_classes > classifier.num_classes:
        raise ValueError(
            f"{dataset!r} has {test.num_classes} classes but the classifier "
            f"{preset!r} has {classifier.num_classes}; labels would be out "
            "of range."
        )
    logits, labels = probing.predict_logits(
        classifier, test, batch_size, verbose=verbose
    )
    metrics = probing.classification_metrics(
        logits, labels, classifier.num_classes
    )
    metrics.update(
        preset=str(preset),
        dataset=str(dataset),
        split=split,
        probe_layers=classifier.probe_layers,
        skipped_files=[p for p, _ in test.skipped],
    )
    names = test.class_names
    if len(names) < classifier.num_classes:
        names = None
    return example_utils.write_metrics(
        output_dir,
        metrics,
        names,
        f"{os.path.basename(str(preset))} on {dataset} ({split})",
    )


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"Unexpected arguments: {argv[1:]}")
    begin = time.time()
    metrics = run(
        FLAGS.preset,
        FLAGS.dataset,
        FLAGS.probe_layers,
        FLAGS.split,
        FLAGS.batch_size,
        FLAGS.output_dir,
        verbose=example_utils.verbosity(),
    )
    example_utils.print_metrics(metrics, "evaluation")
    print(f"Wall time {time.time() - begin:.0f} s.")


if __name__ == "__main__":
    define_flags()
    app.run(
        lambda argv: example_utils.run_script(main, argv),
        flags_parser=example_utils.parse_flags,
    )
