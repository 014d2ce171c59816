"""Evaluate an AIM classifier: top-1 / top-5 and a confusion matrix.

    python examples/evaluate.py --preset=runs/probe/classifier --dataset=digits
    python examples/evaluate.py --preset=aim_600m --dataset=/data/imagenet/val

The release's ImageNet protocol: images go through the classifier's own
converter (for the released presets: short side 256, bicubic, centre crop
224, ImageNet mean and std) and the released head (`--probe_layers=best`
or `last`). A folder without `train/`/`val/` sub-folders is evaluated
whole. Labels follow the classifier's saved class names (`probe.py` and
`finetune.py` save them): each class sub-folder is labelled by its name,
an empty one is a class without images, and a sub-folder the classifier
does not know (or a class without a sub-folder) exits 2. A classifier
without saved names (the released ones) takes the sorted class folders as
labels 0..C-1 (the ImageNet order for a validation folder in the ImageNet
layout), and only when that is unambiguous: exactly C class folders, none
of them empty. Published top-1 (best / last): 79.4 / 78.5 (aim_600m),
82.3 / 80.6 (1b), 83.3 / 82.2 (3b), 84.0 / 82.4 (7b).

Writes `metrics.json` (`top1`, `top5`, `num_test`) and `confusion.png`.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import example_utils  # noqa: E402
import scaffold  # noqa: E402


def check_unnamed(test, classifier, preset, dataset):
    """The rule for a classifier without saved class names: a folder's
    sorted class folders are its labels only if there are exactly as many
    as it has classes, none of them empty; other sources keep their own
    labels, which must be in range."""
    count = classifier.num_classes
    if test.files is None:
        if test.num_classes > count:
            raise ValueError(
                f"{dataset!r} has {test.num_classes} classes but the "
                f"classifier {preset!r} has {count}; labels would be out "
                "of range."
            )
        return
    if test.num_classes == count and not test.empty_classes:
        return
    empty = ""
    if test.empty_classes:
        empty = (
            f" and {len(test.empty_classes)} without images "
            f"({test.empty_classes[:3]})"
        )
    raise ValueError(
        f"The classifier {preset!r} saves no class names, so the sorted "
        f"class folders of {dataset!r} would be its labels 0..{count - 1}; "
        f"but the folder has {test.num_classes} class folders with "
        f"images{empty}, not {count}: the labels would be shifted. Save the "
        "classifier with its class names (probe.py and finetune.py do) or "
        "give a folder with exactly its classes."
    )


@scaffold.writes({"metrics.json": "file", "confusion.png": "file"})
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
    names = classifier.class_names
    test = data.labelled_images(
        dataset, split, image_converter=converter, class_names=names
    )
    if names is None:
        check_unnamed(test, classifier, preset, dataset)
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
    names = names or test.class_names
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
