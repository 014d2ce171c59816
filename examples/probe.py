"""Probe a frozen AIM trunk: attentive (the release's head), linear or k-NN.

    python examples/probe.py --preset=runs/pretrain/backbone --dataset=digits
    python examples/probe.py --preset=runs/pretrain/backbone --probe=knn \\
        --labels_per_class=10
    python examples/probe.py --preset=aim_600m --dataset=/data/imagenet \\
        --probe=attentive --probe_layers=best --epochs=100 --batch_size=1024

The chosen blocks' raw outputs are averaged; with the trunk frozen and no
augmentation they are computed once (`--cache_features`, on by default)
and only the head is trained on them. `--probe=knn` trains nothing: each
test image takes the 20 training images whose features (the same blocks,
mean over the tokens) have the highest cosine similarity and they vote
with weights exp(similarity / 0.07), as DINO does. `--labels_per_class=N`
uses N randomly drawn training images of every class (drawn with
`--seed`; 0: all of them). `--dataset` is `digits`, `photos`,
`tfds:NAME[:SPLIT]` or an image folder in the ImageNet layout (one
sub-folder per class, optionally under `train/` and `val/`). Images go
through the preset's own image converter.

Writes into `--output_dir`: `metrics.json` (`top1`, `top5`, `num_train`,
`num_test`), `confusion.png` and, for the attentive and linear probes,
`classifier/` (a Keras preset folder that `examples/evaluate.py` and
`AIMImageClassifier.from_preset` load; k-NN has no classifier to save).
Exit status 2 with a one-line message on bad input.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import example_utils  # noqa: E402
import scaffold  # noqa: E402


@scaffold.writes(
    {"metrics.json": "file", "confusion.png": "file", "classifier": "preset"}
)
def run(
    preset,
    dataset="digits",
    probe="attentive",
    probe_layers=None,
    epochs=200,
    batch_size=64,
    learning_rate=1e-2,
    weight_decay=0.05,
    seed=0,
    cache_features=True,
    labels_per_class=0,
    output_dir="runs/probe",
    verbose=1,
):
    """Trains and evaluates the probe; returns the metrics dict."""
    output_dir = example_utils.output_folder(output_dir)
    from keras_aim import data
    from keras_aim import probing

    backbone, converter = example_utils.load_backbone(
        preset, None, probe_layers
    )
    train = data.labelled_images(
        dataset, "train", image_converter=converter, seed=seed
    )
    test = data.labelled_images(
        dataset, "test", image_converter=converter, seed=seed
    )
    if labels_per_class and train.arrays is not None:  # labels in memory:
        # a class with too few images is refused before any feature work.
        probing.class_balanced_subset(
            train.arrays[1], labels_per_class, seed, train.num_classes
        )
    if probe == "knn":
        metrics = knn_probe(
            backbone, train, test, probe_layers, labels_per_class, seed, verbose
        )
        return finish(metrics, train, test, output_dir, preset, dataset)
    classifier = probing.train_probe(
        backbone,
        train,
        probe=probe,
        probe_layers=probe_layers,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        seed=seed,
        cache_features=cache_features,
        cache_dir=output_dir,
        image_converter=converter,
        verbose=verbose,
        labels_per_class=labels_per_class,
    )
    logits, labels = probing.predict_logits(classifier, test, batch_size)
    metrics = probing.classification_metrics(logits, labels, train.num_classes)
    folder = os.path.join(output_dir, "classifier")
    classifier.save_to_preset(folder)
    num_train = train.num_examples - len(train.skipped)
    metrics.update(
        num_train=labels_per_class * train.num_classes or num_train,
        labels_per_class=labels_per_class,
        probe=probe,
        probe_layers=classifier.probe_layers,
        files={"classifier": folder},
    )
    return finish(metrics, train, test, output_dir, preset, dataset)


def knn_probe(
    backbone, train, test, probe_layers, labels_per_class, seed, verbose
):
    """k-NN on the mean-pooled block features; the bank is `train`, or
    `labels_per_class` images of every class drawn with `seed`."""
    from keras_aim import probing
    from keras_aim.models.aim.aim_image_classifier import resolve_probe_layers

    if probe_layers is None:  # as AIMImageClassifier: best, else last
        try:
            layers = resolve_probe_layers("best", backbone)
        except ValueError:
            layers = resolve_probe_layers("last", backbone)
    else:
        layers = resolve_probe_layers(probe_layers, backbone)
    features = [
        probing.block_features(
            backbone, split, layers, 64, pool="mean", verbose=verbose
        )
        for split in (train, test)
    ]
    (x, y), (test_x, test_y) = features
    if labels_per_class:
        subset = probing.class_balanced_subset(
            y, labels_per_class, seed, train.num_classes
        )
        x, y = x[subset], y[subset]
    metrics = probing.knn_metrics(x, y, test_x, test_y, train.num_classes)
    metrics.update(
        probe="knn", probe_layers=layers, labels_per_class=labels_per_class
    )
    return metrics


def finish(metrics, train, test, output_dir, preset, dataset):
    """Writes `metrics.json` and `confusion.png`; returns the metrics."""
    probe = metrics["probe"]
    metrics.update(
        preset=str(preset),
        dataset=str(dataset),
        class_names=train.class_names,
        skipped_files=[p for p, _ in train.skipped + test.skipped],
    )
    return example_utils.write_metrics(
        output_dir,
        metrics,
        train.class_names,
        f"{probe} probe of {os.path.basename(str(preset))} on {dataset}",
    )


def report(metrics, settings):
    example_utils.print_metrics(metrics, f"{settings['probe']} probe")


SCRIPT = scaffold.Script(
    run,
    scaffold.flag("preset"),
    scaffold.flag("dataset"),
    scaffold.flag(
        "probe",
        help="attentive or linear: a head trained on the frozen features "
        "(saved in classifier/); knn: weighted k-NN on them (cosine, k=20, "
        "T=0.07): nothing trained, no classifier/.",
        values=("attentive", "linear", "knn"),
    ),
    scaffold.flag(
        "labels_per_class",
        "integer",
        "Train on N randomly drawn images of every class (drawn with "
        "--seed); 0: every training image.",
        minimum=0,
    ),
    scaffold.flag("probe_layers"),
    scaffold.flag("epochs"),
    scaffold.flag("batch_size"),
    scaffold.flag("learning_rate"),
    scaffold.flag("weight_decay"),
    scaffold.flag(
        "seed", help="Seed of the head, the batch order and the label draw."
    ),
    scaffold.flag(
        "cache_features",
        "bool",
        "Compute the block features once (frozen trunk).",
    ),
    scaffold.flag("output_dir"),
    report=report,
    extra=scaffold.terminal_verbose,
)
main = SCRIPT.main
define_flags = SCRIPT.define_flags

if __name__ == "__main__":
    SCRIPT.cli()
