"""Pre-train an AIM backbone with the next-patch pixel objective.

Runs on any Keras backend (`KERAS_BACKEND=jax|torch|tensorflow`). The
defaults train a micro AIM (width 128, 4 blocks, patch 4; pixel head width
256, 2 blocks) on the built-in handwritten digits at 16x16 for 400 steps of
128 images, a few minutes on 2 CPU cores, at a peak learning rate of 1e-3.
`--scale_learning_rate` applies the paper's linear rule instead (1e-3 at
batch 4096, scaled by batch / 4096: 3.1e-5 at batch 128), which suits
large-batch runs but under-trains the micro model (next-patch loss 0.37
after 400 steps instead of 0.13):

    python examples/pretrain.py
    python examples/pretrain.py --dataset=photos --steps=200 --batch_size=64
    python examples/pretrain.py --preset=aim_600m --dataset=tfds:imagenet2012 \
        --batch_size=4096 --steps=1250000 --mixed_precision

`--output_dir` receives `log.csv` (step, loss, learning rate),
`tensorboard/`, `checkpoints/` (every `--checkpoint_every` steps and at the
end), `loss.png`, `reconstructions.png` (held-out images | next-patch
predictions) and `backbone/` (a Keras preset folder for
`keras_aim.AIMBackbone.from_preset`). On built-in labelled data it then
compares the trunk, its random twin and raw pixels (attentive probe, k-NN,
label-efficiency curve: `three_arms.py`), `--knn_every=N` logs a k-NN
top-1 every N steps in `knn.csv`. Rerunning the same command resumes
from the last checkpoint and continues the same loss curve; Ctrl-C or
SIGTERM write a checkpoint before stopping. Exit codes: 0 done, 2 bad
output folder or settings, 3 diverged (NaN/inf loss; the last good
checkpoint is kept), 128 + signal number when stopped by a signal.
"""

import contextlib
import functools
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import example_utils  # noqa: E402
import scaffold  # noqa: E402
import three_arms  # noqa: E402

EXIT_BAD_SETTINGS = scaffold.EXIT_BAD_SETTINGS
EXIT_DIVERGED = scaffold.EXIT_DIVERGED
DEFAULT_STEPS = 400

# Flag defaults; `run(**overrides)` takes the same names.
DEFAULTS = dict(
    preset=None,
    hidden_dim=128,
    num_layers=4,
    num_heads=4,
    patch_size=4,
    head_hidden_dim=256,
    head_num_layers=2,
    token_order="raster",
    dataset="digits",
    image_size=None,  # the data's (scaffold.default_image_size)
    batch_size=128,
    steps=None,  # DEFAULT_STEPS, unless `epochs` sets them
    epochs=None,
    learning_rate=1e-3,
    scale_learning_rate=False,
    base_batch_size=4096,
    warmup_fraction=0.05,
    weight_decay=0.05,
    color_jitter=False,
    seed=0,
    output_dir="runs/pretrain",
    checkpoint_every=100,
    log_every=10,
    keep_checkpoints=2,
    resume=True,
    mixed_precision=False,
    distribution="none",
    mesh=None,
    remat=False,
    num_preview=8,
    probe=True,
    probe_epochs=200,
    probe_learning_rate=1e-2,
    label_draws=5,
    knn_every=0,
    verbose=1,
)
# What a run writes, checked before any work (scaffold.run_folder).
OUTPUTS = {
    "log.csv": "file",
    "tensorboard": "folder",
    "checkpoints": "folder",
    "initial_backbone": "preset",
    "backbone": "preset",
    "loss.png": "file",
    "reconstructions.png": "file",
    "probe.json": "file",
    "confusion.png": "file",
    "label_efficiency.png": "file",
    "knn.csv": "file",
    "summary.json": "file",
}
ARCHITECTURE = ("patch_size", "hidden_dim", "num_layers", "num_heads")
HEAD = ("head_hidden_dim", "head_num_layers", "token_order")
# Settings that leave the loss curve as it is (where and how often the run
# writes, what it reports after training, how the work is spread): a
# resumed run may change them. Every other setting is in the checkpoints'
# fingerprint, and a resumed run must share it.
NOT_IN_FINGERPRINT = (
    "output_dir",
    "checkpoint_every",
    "log_every",
    "keep_checkpoints",
    "resume",
    "num_preview",
    "probe",
    "probe_epochs",
    "probe_learning_rate",
    "label_draws",
    "knn_every",
    "distribution",
    "mesh",
    "remat",
    "verbose",
)


def run(callbacks=(), **overrides):
    """Runs the pre-training example; returns a summary dict.

    Args:
        callbacks: extra Keras callbacks for `fit`.
        **overrides: any of `DEFAULTS`' names (the command-line flags).

    Raises:
        keras_aim.training.TrainingDivergedError: NaN or infinite loss.
        ValueError: bad settings or an unwritable `output_dir`.
    """
    config = scaffold.settings(DEFAULTS, overrides)
    # A data-parallel worker writes nothing; its chief holds the lock.
    lock = example_utils.chief_process()
    with scaffold.run_folder(config["output_dir"], lock, OUTPUTS) as output_dir:
        return _run_locked(config, output_dir, callbacks)


def _run_locked(config, output_dir, callbacks):
    import keras

    from keras_aim import data
    from keras_aim import optimizers
    from keras_aim import training
    from keras_aim.distribution.setup import RunDistribution

    three_arms.check_settings(config)
    source = config["dataset"]
    image_size = config["image_size"] or scaffold.default_image_size(source)
    steps = config["steps"]
    total_steps = example_utils.resolve_steps(
        source,
        config["batch_size"],
        DEFAULT_STEPS if steps is None else steps,
        config["epochs"],
        steps_given=steps is not None,
    )
    config["image_size"], config["steps"] = image_size, total_steps
    peak = config["learning_rate"]
    if config["scale_learning_rate"]:
        peak = optimizers.scaled_learning_rate(
            config["batch_size"], peak, config["base_batch_size"]
        )

    # Made before anything runs (TensorFlow's logical devices need that).
    spread = RunDistribution(
        config["distribution"], config["mesh"], config["batch_size"]
    )
    arch = config
    if config["preset"]:
        from keras_aim.models.aim.aim_presets import PRESETS

        arch = PRESETS[config["preset"]]["backbone"]
    spread.check_config(
        arch["hidden_dim"], arch["num_heads"], config["head_hidden_dim"]
    )
    keras.utils.set_random_seed(config["seed"])
    policy = "mixed_bfloat16" if config["mixed_precision"] else None
    with example_utils.dtype_policy(policy):
        with contextlib.ExitStack() as scopes:
            scopes.enter_context(spread.scope())
            if config["remat"]:
                from keras_aim.distribution.remat import remat_scope

                scopes.enter_context(remat_scope(arch["num_layers"]))
            backbone, pretrainer = example_utils.build_pretrainer(
                (image_size, image_size, 3),
                total_steps,
                config["batch_size"],
                peak,
                config["preset"],
                {k: config[k] for k in ARCHITECTURE},
                {k: config[k] for k in HEAD},
                seed=config["seed"],
                warmup_fraction=config["warmup_fraction"],
                weight_decay=config["weight_decay"],
            )
        spread.prepare(pretrainer)
        dataset = functools.partial(
            data.pretraining_dataset,
            source,
            image_size=image_size,
            batch_size=config["batch_size"],
            seed=config["seed"],
            color_jitter=config["color_jitter"],
            num_shards=spread.num_shards,
            shard_index=spread.shard_index,
        )
        fingerprint = {
            k: v for k, v in config.items() if k not in NOT_IN_FINGERPRINT
        }
        fingerprint["backend"] = keras.backend.backend()
        if config["verbose"]:
            print(
                f"AIM pre-training on {source} ({image_size}x{image_size}), "
                f"backbone {backbone.count_params():,} parameters, pixel head "
                f"{pretrainer.pixel_head.count_params():,}; {total_steps} "
                f"steps of {config['batch_size']}, peak lr {peak:.3g}, "
                f"backend {keras.backend.backend()}, {spread.describe()}."
            )
        initial = os.path.join(output_dir, "initial_backbone")
        resuming = (
            config["resume"]
            and training.CheckpointManager(
                os.path.join(output_dir, training.CHECKPOINT_DIR)
            ).latest()
        )
        if spread.chief and (not resuming or not os.path.isdir(initial)):
            # The random twin of the probe comparison: these exact weights.
            backbone.save_to_preset(initial)
        if config["knn_every"] and spread.chief:  # k-NN during training
            callbacks = [*callbacks, three_arms.knn_monitor(config, output_dir)]
        result = training.train(
            pretrainer,
            lambda start_batch: dataset(start_batch=start_batch),
            total_steps,
            output_dir,
            checkpoint_every=config["checkpoint_every"],
            resume=config["resume"],
            fingerprint=fingerprint,
            max_to_keep=config["keep_checkpoints"],
            callbacks=callbacks,
            verbose=config["verbose"],
            log_every=config["log_every"],
            chief=spread.chief,
            checkpoint_manager=spread.checkpoint_manager(),
        )
        if not spread.chief:  # the chief writes the report
            return {
                "backend": keras.backend.backend(),
                "step": result.step,
                "interrupted": result.interrupted,
            }
        return _report_run(config, result, spread, pretrainer, output_dir)


def _report_run(config, result, spread, pretrainer, output_dir):
    """Writes the report files and `summary.json`; returns the summary."""
    import keras

    from keras_aim import training

    summary = {
        "backend": keras.backend.backend(),
        "distribution": spread.describe(),
        "start_step": result.start_step,
        "step": result.step,
        "total_steps": config["steps"],
        "train_seconds": round(result.seconds, 1),
        "interrupted": result.interrupted,
        "files": {
            "log": os.path.join(output_dir, training.LOG_FILE),
            "tensorboard": os.path.join(output_dir, training.TENSORBOARD_DIR),
            "checkpoint": result.checkpoint,
        },
    }
    source, seed = config["dataset"], config["seed"]
    if result.interrupted is None:
        summary["files"].update(
            example_utils.write_pretraining_report(
                pretrainer,
                source,
                config["image_size"],
                output_dir,
                config["num_preview"],
                seed,
            )
        )
    if config["knn_every"]:
        summary["files"]["knn_log"] = os.path.join(output_dir, "knn.csv")
    if result.interrupted is None and config["probe"]:
        summary["probe"] = three_arms.compare_arms(
            pretrainer.backbone,
            os.path.join(output_dir, "initial_backbone"),
            source,
            output_dir,
            epochs=config["probe_epochs"],
            learning_rate=config["probe_learning_rate"],
            seed=seed,
            draws=config["label_draws"],
            verbose=config["verbose"],
        )
        if summary["probe"] is not None:
            summary["files"].update(summary["probe"].pop("files"))
    log = training.read_log(summary["files"]["log"])
    loss = log["loss"]
    summary["first_loss"] = float(loss[0]) if len(loss) else None
    summary["first_step"] = int(log["step"][0]) if len(loss) else None
    summary["last_loss"] = float(loss[-1]) if len(loss) else None
    summary["files"]["summary"] = os.path.join(output_dir, "summary.json")
    with open(summary["files"]["summary"], "w") as f:
        json.dump(summary, f, indent=1)
    return summary


def print_summary(summary, settings=None):
    """Prints the run's summary; returns 128 + the signal that stopped it."""
    if "files" not in summary:  # a data-parallel worker: the chief reports
        return _stopped(summary, quiet=True)
    files = "\n".join(
        f"  {name}: {path}" for name, path in summary["files"].items() if path
    )
    status = "stopped early" if summary["interrupted"] else "done"
    first, last = summary["first_loss"], summary["last_loss"]
    losses = ""
    if first is not None:
        losses = (
            f"; loss {first:.4f} (step {summary['first_step']}) -> {last:.4f}"
        )
    print(
        f"\n{status}: step {summary['step']}/{summary['total_steps']} "
        f"({summary['backend']}, {summary['train_seconds']} s of training in "
        f"this run){losses}.\nFiles:\n{files}"
    )
    if summary.get("probe"):
        three_arms.print_arms(summary["probe"])
    return _stopped(summary)


def _stopped(summary, quiet=False):
    if not summary["interrupted"]:
        return None
    if not quiet:
        print(
            "Stopped by a signal after writing a checkpoint; rerun the same "
            "command to resume."
        )
    return 128 + summary["interrupted"]


def run_command(**settings):
    """`run` from the command line: TensorFlow's devices made first, and a
    diverged loss exits `EXIT_DIVERGED`."""
    example_utils.prepare_tensorflow_devices(
        settings["distribution"], settings["mesh"]
    )
    from keras_aim import training

    try:
        return run(**settings)
    except training.TrainingDivergedError as error:
        raise scaffold.ScriptError(error, EXIT_DIVERGED) from error


SCRIPT = scaffold.Script(
    run_command,
    scaffold.flag(
        "preset",
        "enum",
        "Released architecture to train from scratch (no weights are "
        "loaded); overrides --hidden_dim/--num_layers/--num_heads/"
        "--patch_size.",
        values=("aim_600m", "aim_1b", "aim_3b", "aim_7b"),
    ),
    scaffold.flag("hidden_dim"),
    scaffold.flag("num_layers"),
    scaffold.flag("num_heads"),
    scaffold.flag("patch_size"),
    scaffold.flag("head_hidden_dim", help="Pixel-head width (paper: 2048)."),
    scaffold.flag("head_num_layers", help="Pixel-head blocks (paper: 12)."),
    scaffold.flag(
        "token_order",
        "enum",
        "Order in which patches are predicted.",
        values=("raster", "spiral", "checkerboard", "random"),
    ),
    scaffold.flag("dataset"),
    scaffold.flag("image_size"),
    scaffold.flag("batch_size", help="Images per step."),
    scaffold.flag(
        "steps",
        help=f"Optimizer steps of the whole run (default {DEFAULT_STEPS}).",
    ),
    scaffold.flag(
        "epochs",
        "float",
        "Passes over the training images (digits or a folder); replaces "
        "--steps.",
        minimum=None,
        positive=True,
    ),
    scaffold.flag(
        "learning_rate",
        help="Peak learning rate (at --base_batch_size when "
        "--scale_learning_rate).",
    ),
    scaffold.flag(
        "scale_learning_rate",
        "bool",
        "Scale --learning_rate by batch_size / --base_batch_size (the "
        "paper's linear rule: 1e-3 at 4096).",
    ),
    scaffold.flag(
        "base_batch_size",
        "integer",
        "Batch size at which --learning_rate applies when scaling.",
        minimum=1,
    ),
    scaffold.flag(
        "warmup_fraction",
        "float",
        "Linear warm-up share of the steps, then cosine decay to 0 (paper: "
        "0.025).",
        minimum=0.0,
        maximum=1.0,
    ),
    scaffold.flag("weight_decay"),
    scaffold.flag("color_jitter", "bool", "Add colour jitter (p 0.8)."),
    scaffold.flag("seed", help="Seed of weights, data, prefixes."),
    scaffold.flag("output_dir"),
    scaffold.flag("checkpoint_every", "integer", "Steps between checkpoints."),
    scaffold.flag(
        "log_every",
        "integer",
        "Steps per log.csv row (their mean loss); 1 logs every step. Between "
        "rows the steps run with no host transfer.",
    ),
    scaffold.flag("keep_checkpoints", "integer", "Checkpoints to keep."),
    scaffold.flag(
        "resume",
        "bool",
        "Resume from the last checkpoint in --output_dir; --noresume deletes "
        "the previous log and checkpoints there and starts over.",
    ),
    scaffold.flag(
        "mixed_precision",
        "bool",
        "Train with the mixed_bfloat16 policy (paper: bfloat16).",
    ),
    scaffold.flag(
        "num_preview", "integer", "Held-out images in the preview grid."
    ),
    scaffold.flag(
        "distribution",
        "enum",
        "data: keras DataParallel (jax), torchrun processes (torch), "
        "MirroredStrategy (tensorflow); model: ModelParallel with the AIM "
        "layout map (jax).",
        values=("none", "data", "model"),
    ),
    scaffold.flag(
        "mesh",
        "string",
        "BATCHxMODEL device mesh for --distribution=model (e.g. 2x4); Nx1 "
        "gives tensorflow N logical CPU replicas.",
    ),
    scaffold.flag(
        "remat",
        "bool",
        "Recompute each block's activations in the backward pass "
        "(keras.RematScope): less memory, about a third more compute.",
    ),
    scaffold.flag(
        "probe",
        "bool",
        "After training, compare the trained trunk, its random twin (the "
        "same initial weights) and the raw pixels on the labelled built-in "
        "data: attentive probe, k-NN, label-efficiency curve.",
    ),
    scaffold.flag("probe_epochs"),
    scaffold.flag("probe_learning_rate"),
    *three_arms.FLAGS,  # --label_draws, --knn_every
    scaffold.flag("verbose", "integer", "1: progress bar; 0: quiet."),
    defaults=DEFAULTS,
    report=print_summary,
)
main = SCRIPT.main
define_flags = SCRIPT.define_flags

if __name__ == "__main__":
    SCRIPT.cli()
