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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import example_utils  # noqa: E402
import scaffold  # noqa: E402


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


def report(metrics, settings):
    example_utils.print_metrics(metrics, "evaluation")


SCRIPT = scaffold.Script(
    run,
    scaffold.flag("preset", help="Classifier preset: name or folder."),
    scaffold.flag("dataset"),
    scaffold.flag(
        "probe_layers",
        help="For released presets: best or last (which released head).",
    ),
    scaffold.flag("split"),
    scaffold.flag("batch_size", help="Images per forward pass."),
    scaffold.flag("output_dir"),
    report=report,
    extra=scaffold.terminal_verbose,
)
main = SCRIPT.main
define_flags = SCRIPT.define_flags

if __name__ == "__main__":
    SCRIPT.cli()
