"""The main job's comparison: a pre-trained trunk, its random twin (the same
initial weights, untrained) and the raw pixels, on held-out labelled data.

Three protocols, each on features computed once per arm and split:

- the attentive probe on every label (the release's head; 200 epochs at
  1e-2 by default), on the averaged outputs of the last blocks;
- k-NN as DINO does it (cosine, k = 20, votes `exp(sim / 0.07)`) on the
  same features mean-pooled over the tokens (the pixels: flattened);
- the label-efficiency curve: the attentive probe, a logistic regression
  (on the pooled features; the pixels' baseline model) and k-NN trained on
  1, 2, 5, 10 and 20 labels per class and on all of them, `draws` random
  class-balanced draws per point, the same draws for every arm.

Used by `pretrain.py`; imported by name (this folder is on `sys.path`).
"""

import json
import os
import time

import numpy as np
from flag_table import flag

# pretrain.py's flags of this part of the job.
FLAGS = (
    flag(
        "label_draws",
        "integer",
        "Random draws of the labelled examples per point of the "
        "label-efficiency curve (1, 2, 5, 10, 20 labels per class); 0: "
        "no curve.",
        minimum=0,
        maximum=100,
    ),
    flag(
        "knn_every",
        "integer",
        "Log the k-NN top-1 of the held-out split every N steps of training "
        "in knn.csv (built-in labelled data; 0: off).",
        minimum=0,
    ),
)

ARMS = ("pretrained", "random_twin", "raw_pixels")
ARM_NAMES = {
    "pretrained": "pre-trained",
    "random_twin": "random twin",
    "raw_pixels": "raw pixels",
}
LABELLED_SOURCES = ("digits", "photos")


def _splits(source, image_shape, seed):
    from keras_aim import data
    from keras_aim.models.aim.aim_image_converter import default_image_converter

    converter = default_image_converter(image_shape)
    return [
        data.labelled_images(
            source, split, image_converter=converter, seed=seed
        )
        for split in ("train", "test")
    ]


def _trunk_features(backbone, train, test, layers):
    from keras_aim import probing

    x, _ = probing.block_features(backbone, train, layers, 256, verbose=0)
    tx, _ = probing.block_features(backbone, test, layers, 256, verbose=0)
    return x, tx


def compare_arms(
    backbone,
    initial_dir,
    source,
    output_dir,
    epochs=200,
    learning_rate=1e-2,
    seed=0,
    draws=5,
    verbose=1,
):
    """Runs the three protocols on the three arms; writes `probe.json`,
    `confusion.png` (the pre-trained arm's probe) and
    `label_efficiency.png`.

    Returns:
        The results (also in `probe.json`) plus `files`, or `None` when
        `source` is not a built-in labelled set.
    """
    from keras_aim import probing
    from keras_aim.models.aim.aim_image_classifier import resolve_probe_layers
    from keras_aim.models.backbone import Backbone
    from keras_aim.utils import plots

    if source not in LABELLED_SOURCES:
        print(f"No probes: {source!r} is not a built-in labelled set.")
        return None
    begin = time.time()
    twin = Backbone.from_preset(initial_dir)
    train, test = _splits(source, backbone.image_shape, seed)
    (pixels, y), (test_pixels, test_y) = train.to_arrays(), test.to_arrays()
    layers = resolve_probe_layers("last", backbone)
    features = {
        "pretrained": _trunk_features(backbone, train, test, layers),
        "random_twin": _trunk_features(twin, train, test, layers),
    }
    seconds = {"features": time.time() - begin, "probe": 0.0, "curves": 0.0}
    num_classes = train.num_classes
    # One compiled head per training-set size, for both trunks and every
    # draw (same initial weights and batches as `probing.train_probe`).
    probe = probing.FeatureProbe(
        features["pretrained"][0].shape[1:],
        num_classes,
        backbone.num_heads,
        epochs=epochs,
        learning_rate=learning_rate,
        seed=seed,
    )
    results = {
        "dataset": source,
        "epochs": epochs,
        "learning_rate": learning_rate,
        "seed": seed,
        "probe_layers": layers,
        "num_train": int(len(y)),
        "num_test": int(len(test_y)),
    }
    knn, curves, confusion = {}, {}, None
    for arm in ARMS:
        classifiers = {}
        if arm == "raw_pixels":
            pooled = pixels.reshape(len(pixels), -1)
            test_pooled = test_pixels.reshape(len(test_pixels), -1)
        else:
            x, tx = features[arm]
            pooled, test_pooled = x.mean(axis=1), tx.mean(axis=1)
            if verbose:
                print(f"Attentive probe of the {ARM_NAMES[arm]} trunk...")
            start = time.time()
            logits = probe(x, y, tx)
            seconds["probe"] += time.time() - start
            metrics = probing.classification_metrics(
                logits, test_y, num_classes
            )
            results[arm] = {"top1": metrics["top1"], "top5": metrics["top5"]}
            if arm == "pretrained":
                confusion = metrics["confusion"]

            def attentive(indices, draw, x=x, tx=tx, logits=logits):
                if len(indices) == len(y):  # every label: the probe above
                    return logits
                return probe(x[indices], y[indices], tx)

            classifiers["attentive probe"] = attentive

        def logistic(indices, draw, a=pooled, b=test_pooled):
            return probing.logistic_regression_scores(
                a[indices], y[indices], b, num_classes
            )

        def nearest(indices, draw, a=pooled, b=test_pooled):
            return probing.knn_votes(a[indices], y[indices], b, num_classes)

        classifiers["logistic regression"] = logistic
        classifiers["k-NN"] = nearest
        metrics = probing.knn_metrics(pooled, y, test_pooled, test_y)
        knn[arm] = {"top1": metrics["top1"], "top5": metrics["top5"]}
        start = time.time()
        if draws:
            if verbose:
                print(f"Label-efficiency curve of the {ARM_NAMES[arm]} arm...")
            curves[arm] = probing.label_efficiency(
                classifiers, y, test_y, num_classes, draws=draws, seed=seed
            )
        else:  # every label only: the pixels' logistic regression
            scores = logistic(np.arange(len(y)), 0)
            curves[arm] = {
                "methods": {
                    "logistic regression": {
                        "top1_mean": [
                            float(np.mean(scores.argmax(-1) == test_y))
                        ]
                    }
                }
            }
        seconds["curves"] += time.time() - start
    pixel_curve = curves["raw_pixels"]["methods"]["logistic regression"]
    results["raw_pixels_top1"] = pixel_curve["top1_mean"][-1]
    results["knn"] = {
        **knn,
        "k": probing.knn.DEFAULT_K,
        "temperature": probing.knn.DEFAULT_TEMPERATURE,
        "features": f"blocks {layers} averaged, mean over tokens (raw "
        "pixels: flattened)",
    }
    results["label_efficiency"] = None
    if draws:
        first = curves["pretrained"]
        results["label_efficiency"] = {
            "labels_per_class": first["labels_per_class"],
            "num_train": first["num_train"],
            "draws": first["draws"],
            "seed": first["seed"],
            "arms": {arm: curves[arm]["methods"] for arm in ARMS},
        }
    results["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    files = {
        "probe": os.path.join(output_dir, "probe.json"),
        "confusion": os.path.join(output_dir, "confusion.png"),
        "label_efficiency": os.path.join(output_dir, "label_efficiency.png"),
    }
    plots.plot_confusion_matrix(
        confusion,
        files["confusion"],
        train.class_names,
        title=f"attentive probe of the pre-trained trunk on {source}",
    )
    if draws:
        plots.plot_label_efficiency(
            {ARM_NAMES[arm]: curves[arm] for arm in ARMS},
            files["label_efficiency"],
            title=f"held-out {source} ({len(test_y)} images): mean +- std "
            f"over {draws} draws of the labelled examples",
        )
    else:
        del files["label_efficiency"]
    with open(files["probe"], "w") as f:
        json.dump(results, f, indent=1)
    return {**results, "files": files}


def check_settings(config):
    """Refuses `--knn_every` without built-in labelled data, before any
    work (a `ValueError`)."""
    if config["knn_every"] and config["dataset"] not in LABELLED_SOURCES:
        raise ValueError(
            f"--knn_every needs labelled held-out data: --dataset must be "
            f"one of {LABELLED_SOURCES}; got {config['dataset']!r}."
        )


def knn_monitor(config, output_dir):
    """The `KNNMonitor` of `--knn_every` (`config`: the run's settings):
    the probe's train split as the bank, its test split (held out from
    pre-training) as the queries, `knn.csv` in `output_dir`."""
    from keras_aim import data
    from keras_aim.callbacks import KNNMonitor
    from keras_aim.callbacks.knn_monitor import KNN_LOG_FILE

    check_settings(config)
    source, seed = config["dataset"], config["seed"]
    train, test = (
        data.labelled_images(
            source, split, image_size=config["image_size"], seed=seed
        )
        for split in ("train", "test")
    )
    return KNNMonitor(
        train.to_arrays(),
        test.to_arrays(),
        config["knn_every"],
        os.path.join(output_dir, KNN_LOG_FILE),
        verbose=config["verbose"],
    )


def print_arms(results):
    """Prints the three protocols as a short table."""
    print(
        f"Attentive probe on held-out {results['dataset']} (test top-1, "
        f"{results['num_test']} images): pre-trained "
        f"{100 * results['pretrained']['top1']:.1f}% | random twin (same "
        f"initial weights) {100 * results['random_twin']['top1']:.1f}% | "
        f"raw pixels (logistic regression) "
        f"{100 * results['raw_pixels_top1']:.1f}%."
    )
    knn = results["knn"]
    print(
        f"k-NN (cosine, k={knn['k']}, T={knn['temperature']}): "
        + " | ".join(
            f"{ARM_NAMES[arm]} {100 * knn[arm]['top1']:.1f}%" for arm in ARMS
        )
        + "."
    )
    curve = results["label_efficiency"]
    if curve is None:
        return
    points = "".join(f"{p!s:>6}" for p in curve["labels_per_class"])
    print(
        f"Test top-1 (%) by labels per class (mean of {curve['draws']} "
        f"draws; 'all' is one run):\n{'labels per class':<34}{points}"
    )
    for method in ("attentive probe", "logistic regression", "k-NN"):
        for arm in ARMS:
            result = curve["arms"][arm].get(method)
            if result is not None:
                values = "".join(f"{100 * v:6.1f}" for v in result["top1_mean"])
                print(f"{method:<20}{ARM_NAMES[arm]:<14}{values}")
