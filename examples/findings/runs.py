"""One run of the study (train, then measure every checkpoint) and the
study loop, which reuses the runs that finished with the same settings."""

import functools
import json
import math
import os
import shutil
import time

import example_utils

from . import ablations
from .study import planned_runs
from .study import run_settings


def build_models(config, run):
    """The backbone and compiled pretrainer of one run."""
    import keras

    keras.utils.set_random_seed(run["seed"])
    size = run["size"]
    head = {
        "head_hidden_dim": config["head_hidden_dim"],
        "head_num_layers": config["head_num_layers"],
    }
    if run["ablation"]:
        head.update(ablations.settings(run["ablation"]))
    return example_utils.build_pretrainer(
        (config["image_size"], config["image_size"], 3),
        config["steps"],
        config["batch_size"],
        config["learning_rate"],
        size.get("preset"),
        {
            "patch_size": config["patch_size"],
            "hidden_dim": size.get("hidden_dim"),
            "num_layers": config["num_layers"],
            "num_heads": config["num_heads"],
        },
        head,
        seed=run["seed"],
        warmup_fraction=0.05,
    )


def held_out_images(config):
    """The probe's test images: never seen in pre-training (digits, photos)."""
    from keras_aim.data.labelled import labelled_images

    test = labelled_images(
        config["dataset"], "test", image_size=config["image_size"]
    )
    images, _ = test.to_arrays()
    return images


def probe_splits(config, backbone, seed):
    """The labelled train and test splits, read as `probe_accuracy` does."""
    from keras_aim.data.labelled import labelled_images
    from keras_aim.models.aim.aim_image_converter import default_image_converter

    converter = default_image_converter(backbone.image_shape)
    return [
        labelled_images(
            config["dataset"], split, image_converter=converter, seed=seed
        )
        for split in ("train", "test")
    ]


def execute_run(config, run, held_out, folder):
    """Trains one run (resumably) and measures every checkpoint."""
    from keras_aim import data
    from keras_aim import training
    from keras_aim.probing.repeated import RepeatedProbe

    backbone, pretrainer = build_models(config, run)
    dataset = functools.partial(
        data.pretraining_dataset,
        config["dataset"],
        image_size=config["image_size"],
        batch_size=config["batch_size"],
        seed=run["seed"],
    )
    steps = config["checkpoint_steps"]
    fingerprint = run_settings(config, run)
    begin = time.time()
    # A checkpoint at each study step: the window ends there (log_every
    # divides each one), and every checkpoint is kept.
    log_every = math.gcd(*steps) if len(steps) > 1 else steps[0]
    training.train(
        pretrainer,
        lambda start_batch: dataset(start_batch=start_batch),
        config["steps"],
        folder,
        checkpoint_every=log_every,
        fingerprint=fingerprint,
        max_to_keep=config["steps"] // log_every + 1,
        tensorboard=False,
        verbose=0,
        log_every=log_every,
    )
    train_seconds = time.time() - begin
    manager = training.CheckpointManager(
        os.path.join(folder, training.CHECKPOINT_DIR), read_only=True
    )
    found = dict(manager.checkpoints())
    # An ablation is compared at its end only; the default-recipe runs at
    # every study step (the steps finding and the correlation).
    measured = steps[-1:] if run["ablation"] else steps
    probe = RepeatedProbe(
        backbone,
        *probe_splits(config, backbone, run["seed"]),
        epochs=config["probe_epochs"],
        learning_rate=config["probe_learning_rate"],
        seed=run["seed"],
    )
    points = []
    for step in measured:
        if step not in found:
            raise RuntimeError(
                f"Run {run['name']} has no checkpoint at step {step}."
            )
        manager.restore(pretrainer, found[step], fingerprint=fingerprint)
        loss = pretrainer.evaluate(
            held_out, batch_size=config["batch_size"], verbose=0
        )
        points.append(
            {
                "step": step,
                "heldout_loss": float(
                    loss[0] if isinstance(loss, list) else loss
                ),
                "probe_top1": float(probe()["top1"]),
            }
        )
    return {
        "settings": fingerprint,
        "parameters": int(backbone.count_params()),
        "points": points,
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.time() - begin, 1),
    }


def load_finished(path, settings):
    """A finished run's result, or `None` (missing, damaged, other settings)."""
    try:
        with open(path) as f:
            result = json.load(f)
    except (OSError, ValueError):
        return None
    if result.get("settings") != settings:
        return None
    return result


def run_study(config, progress=print):
    """Runs (or reuses) every run; returns `{name: result}`."""
    from keras_aim.utils.io_utils import write_json

    runs = planned_runs(config)
    held_out = None
    results = {}
    for index, run in enumerate(runs, 1):
        folder = os.path.join(config["output_dir"], "runs", run["name"])
        path = os.path.join(folder, "result.json")
        settings = json.loads(json.dumps(run_settings(config, run)))
        result = load_finished(path, settings)
        reused = result is not None
        if not reused:
            if os.path.exists(path):  # other settings: start the run over
                shutil.rmtree(folder)
            if held_out is None:
                held_out = held_out_images(config)
            result = execute_run(config, run, held_out, folder)
            result["settings"] = settings
            write_json(path, result)
        results[run["name"]] = {**result, "run": run}
        last = result["points"][-1]
        what = run["ablation"] or "default"
        how = "reused" if reused else f"{result['seconds']:.0f} s"
        progress(
            f"[{index}/{len(runs)}] {run['size']['name']} seed {run['seed']} "
            f"({what}): held-out loss {last['heldout_loss']:.4f}, probe top-1 "
            f"{100 * last['probe_top1']:.1f}% ({how})"
        )
    return results
