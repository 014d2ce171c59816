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
import time

from absl import app
from absl import flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import example_utils  # noqa: E402


def define_flags():
    """Defines the flags (only when run as a script: the tests import it)."""
    flags.DEFINE_string(
        "preset", None, "Preset name, Keras preset or hub folder."
    )
    flags.DEFINE_string(
        "dataset", "digits", "digits, photos, tfds:NAME[:SPLIT] or a folder."
    )
    flags.DEFINE_enum("probe", "attentive", ["attentive", "linear"], "Head.")
    flags.DEFINE_string(
        "probe_layers",
        None,
        "best, last or comma-separated 0-based blocks (default: best for the "
        "released sizes, else last).",
    )
    flags.DEFINE_integer("epochs", 200, "Passes over the training split.")
    flags.DEFINE_integer("batch_size", 64, "Examples per step.")
    flags.DEFINE_float("learning_rate", 1e-2, "Peak learning rate (AdamW).")
    flags.DEFINE_float("weight_decay", 0.05, "AdamW weight decay.")
    flags.DEFINE_integer("seed", 0, "Seed of the head and the batch order.")
    flags.DEFINE_bool(
        "cache_features",
        True,
        "Compute the block features once (frozen trunk).",
    )
    flags.DEFINE_string(
        "output_dir", "runs/probe", "Where to write the results."
    )


FLAGS = flags.FLAGS


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

    backbone, converter = example_utils.load_backbone(preset)
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


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"Unexpected arguments: {argv[1:]}")
    begin = time.time()
    metrics = run(
        FLAGS.preset,
        FLAGS.dataset,
        FLAGS.probe,
        FLAGS.probe_layers,
        FLAGS.epochs,
        FLAGS.batch_size,
        FLAGS.learning_rate,
        FLAGS.weight_decay,
        FLAGS.seed,
        FLAGS.cache_features,
        FLAGS.output_dir,
        verbose=example_utils.verbosity(),
    )
    example_utils.print_metrics(metrics, f"{FLAGS.probe} probe")
    print(f"Wall time {time.time() - begin:.0f} s.")


if __name__ == "__main__":
    define_flags()
    app.run(
        lambda argv: example_utils.run_script(main, argv),
        flags_parser=example_utils.parse_flags,
    )
