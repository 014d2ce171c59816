"""Probe a frozen AIM trunk: attentive (the release's head) or linear.

    python examples/probe.py --preset=runs/pretrain/backbone --dataset=digits
    python examples/probe.py --preset=aim_600m --dataset=/data/imagenet \\
        --probe=attentive --probe_layers=best --epochs=100 --batch_size=1024

The chosen blocks' raw outputs are averaged; with the trunk frozen and no
augmentation they are computed once (`--cache_features`, on by default)
and only the head is trained on them. `--dataset` is `digits`, `photos`,
`tfds:NAME[:SPLIT]` or an image folder in the ImageNet layout (one
sub-folder per class, optionally under `train/` and `val/`). Images go
through the preset's own image converter.

Writes into `--output_dir`: `metrics.json` (`top1`, `top5`, `num_train`,
`num_test`), `confusion.png` and `classifier/` (a Keras preset folder that
`examples/evaluate.py` and `AIMImageClassifier.from_preset` load). Exit
status 2 with a one-line message on bad input.
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
    )
    logits, labels = probing.predict_logits(classifier, test, batch_size)
    metrics = probing.classification_metrics(logits, labels, train.num_classes)
    folder = os.path.join(output_dir, "classifier")
    classifier.save_to_preset(folder)
    metrics.update(
        num_train=train.num_examples - len(train.skipped),
        probe=probe,
        probe_layers=classifier.probe_layers,
        preset=str(preset),
        dataset=str(dataset),
        class_names=train.class_names,
        skipped_files=[p for p, _ in train.skipped + test.skipped],
        files={"classifier": folder},
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
    scaffold.flag("probe"),
    scaffold.flag("probe_layers"),
    scaffold.flag("epochs"),
    scaffold.flag("batch_size"),
    scaffold.flag("learning_rate"),
    scaffold.flag("weight_decay"),
    scaffold.flag("seed", help="Seed of the head and the batch order."),
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
