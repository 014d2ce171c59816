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
`keras_aim.AIMBackbone.from_preset`). Rerunning the same command resumes
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
import time

from absl import app
from absl import flags
from absl import logging

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import example_utils  # noqa: E402

EXIT_BAD_SETTINGS = example_utils.EXIT_BAD_SETTINGS
EXIT_DIVERGED = example_utils.EXIT_DIVERGED

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
    image_size=None,
    batch_size=128,
    steps=400,
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
    verbose=1,
)
# Settings that change the loss curve: a resumed run must share them.
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
    "distribution",
    "mesh",
    "remat",
    "verbose",
)

FLAGS = flags.FLAGS


def define_flags():
    """Defines the flags (when run as a script; tests call it too)."""
    d = DEFAULTS
    flags.DEFINE_enum(
        "preset",
        d["preset"],
        ["aim_600m", "aim_1b", "aim_3b", "aim_7b"],
        "Released architecture to train from scratch (no weights are loaded); "
        "overrides --hidden_dim/--num_layers/--num_heads/--patch_size.",
    )
    flags.DEFINE_integer("hidden_dim", d["hidden_dim"], "Trunk width.")
    flags.DEFINE_integer("num_layers", d["num_layers"], "Trunk blocks.")
    flags.DEFINE_integer("num_heads", d["num_heads"], "Attention heads.")
    flags.DEFINE_integer("patch_size", d["patch_size"], "Patch size in pixels.")
    flags.DEFINE_integer(
        "head_hidden_dim",
        d["head_hidden_dim"],
        "Pixel-head width (paper: 2048).",
    )
    flags.DEFINE_integer(
        "head_num_layers",
        d["head_num_layers"],
        "Pixel-head blocks (paper: 12).",
    )
    flags.DEFINE_enum(
        "token_order",
        d["token_order"],
        ["raster", "spiral", "checkerboard", "random"],
        "Order in which patches are predicted.",
    )
    flags.DEFINE_string(
        "dataset",
        d["dataset"],
        "'digits' or 'photos' (built in), 'tfds:NAME[:SPLIT]' or an image "
        "folder.",
    )
    flags.DEFINE_integer(
        "image_size",
        d["image_size"],
        "Training image size; default 16 (digits), 32 (photos) or 224.",
    )
    flags.DEFINE_integer("batch_size", d["batch_size"], "Images per step.")
    flags.DEFINE_integer(
        "steps", d["steps"], "Optimizer steps of the whole run."
    )
    flags.DEFINE_float(
        "epochs",
        d["epochs"],
        "Passes over the training images (digits or a folder); replaces "
        "--steps.",
    )
    flags.DEFINE_float(
        "learning_rate",
        d["learning_rate"],
        "Peak learning rate (at --base_batch_size when --scale_learning_rate).",
    )
    flags.DEFINE_bool(
        "scale_learning_rate",
        d["scale_learning_rate"],
        "Scale --learning_rate by batch_size / --base_batch_size (the paper's "
        "linear rule: 1e-3 at 4096).",
    )
    flags.DEFINE_integer(
        "base_batch_size",
        d["base_batch_size"],
        "Batch size at which --learning_rate applies when scaling.",
    )
    flags.DEFINE_float(
        "warmup_fraction",
        d["warmup_fraction"],
        "Linear warm-up share of the steps, then cosine decay to 0 (paper: "
        "0.025).",
    )
    flags.DEFINE_float("weight_decay", d["weight_decay"], "AdamW weight decay.")
    flags.DEFINE_boolean(
        "color_jitter", d["color_jitter"], "Add colour jitter (p 0.8)."
    )
    flags.DEFINE_integer("seed", d["seed"], "Seed of weights, data, prefixes.")
    flags.DEFINE_string(
        "output_dir", d["output_dir"], "Where to write the run."
    )
    flags.DEFINE_integer(
        "checkpoint_every", d["checkpoint_every"], "Steps between checkpoints."
    )
    flags.DEFINE_integer(
        "log_every",
        d["log_every"],
        "Steps per log.csv row (their mean loss); 1 logs every step. Between "
        "rows the steps run with no host transfer.",
    )
    flags.DEFINE_integer(
        "keep_checkpoints", d["keep_checkpoints"], "Checkpoints to keep."
    )
    flags.DEFINE_boolean(
        "resume",
        d["resume"],
        "Resume from the last checkpoint in --output_dir; --noresume deletes "
        "the previous log and checkpoints there and starts over.",
    )
    flags.DEFINE_boolean(
        "mixed_precision",
        d["mixed_precision"],
        "Train with the mixed_bfloat16 policy (paper: bfloat16).",
    )
    flags.DEFINE_integer(
        "num_preview", d["num_preview"], "Held-out images in the preview grid."
    )
    flags.DEFINE_enum(
        "distribution",
        d["distribution"],
        ["none", "data", "model"],
        "data: keras DataParallel (jax), torchrun processes (torch), "
        "MirroredStrategy (tensorflow); model: ModelParallel with the AIM "
        "layout map (jax).",
    )
    flags.DEFINE_string(
        "mesh",
        d["mesh"],
        "BATCHxMODEL device mesh for --distribution=model (e.g. 2x4); Nx1 "
        "gives tensorflow N logical CPU replicas.",
    )
    flags.DEFINE_boolean(
        "remat",
        d["remat"],
        "Recompute each block's activations in the backward pass "
        "(keras.RematScope): less memory, about a third more compute.",
    )
    flags.DEFINE_boolean(
        "probe",
        d["probe"],
        "After training, attentive-probe the trained trunk and its random twin "
        "(the same initial weights) on the labelled built-in data.",
    )
    flags.DEFINE_integer(
        "probe_epochs", d["probe_epochs"], "Epochs of each attentive probe."
    )
    flags.DEFINE_float(
        "probe_learning_rate",
        d["probe_learning_rate"],
        "Peak learning rate of the probes.",
    )
    flags.DEFINE_integer("verbose", d["verbose"], "1: progress bar; 0: quiet.")


def run(callbacks=(), **overrides):
    """Runs the pre-training example; returns a summary dict.

    Args:
        callbacks: extra Keras callbacks for `fit`.
        **overrides: any of `DEFAULTS`' names (the command-line flags).

    Raises:
        keras_aim.training.TrainingDivergedError: NaN or infinite loss.
        ValueError: bad settings or an unwritable `output_dir`.
    """
    unknown = sorted(set(overrides) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"Unknown settings {unknown}; known: {list(DEFAULTS)}")
    config = {**DEFAULTS, **overrides}
    from keras_aim import training

    # Fail on an unwritable folder, or one in use, before anything slow.
    output_dir = training.prepare_output_dir(config["output_dir"])
    if not example_utils.chief_process():
        # A data-parallel worker writes nothing; the chief holds the lock.
        return _run_locked(config, output_dir, overrides, callbacks)
    with training.RunLock(output_dir):
        return _run_locked(config, output_dir, overrides, callbacks)


def _run_locked(config, output_dir, overrides, callbacks):
    import keras

    from keras_aim import data
    from keras_aim import optimizers
    from keras_aim import training
    from keras_aim.distribution.setup import RunDistribution

    source = config["dataset"]
    image_size = config["image_size"] or example_utils.default_image_size(
        source
    )
    total_steps = example_utils.resolve_steps(
        source,
        config["batch_size"],
        config["steps"],
        config["epochs"],
        steps_given="steps" in overrides,
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
    previous_policy = keras.config.dtype_policy()
    keras.utils.set_random_seed(config["seed"])
    if config["mixed_precision"]:
        keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        with contextlib.ExitStack() as scopes:
            scopes.enter_context(spread.scope())
            if config["remat"]:
                from keras_aim.distribution.remat import remat_scope

                scopes.enter_context(remat_scope(arch["num_layers"]))
            backbone, pretrainer = build_pretrainer(
                config, image_size, total_steps, peak
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
        dataset = _start_batch_factory(dataset)
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
        result = training.train(
            pretrainer,
            dataset,
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
        summary = {
            "backend": keras.backend.backend(),
            "distribution": spread.describe(),
            "start_step": result.start_step,
            "step": result.step,
            "total_steps": total_steps,
            "train_seconds": round(result.seconds, 1),
            "interrupted": result.interrupted,
            "files": {
                "log": os.path.join(output_dir, training.LOG_FILE),
                "tensorboard": os.path.join(
                    output_dir, training.TENSORBOARD_DIR
                ),
                "checkpoint": result.checkpoint,
            },
        }
        if result.interrupted is None:
            summary["files"].update(
                write_report(
                    pretrainer,
                    source,
                    image_size,
                    output_dir,
                    config["num_preview"],
                    config["seed"],
                )
            )
        if result.interrupted is None and config["probe"]:
            summary["probe"] = example_utils.probe_against_twin(
                backbone,
                initial,
                source,
                output_dir,
                epochs=config["probe_epochs"],
                learning_rate=config["probe_learning_rate"],
                seed=config["seed"],
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
    finally:
        keras.config.set_dtype_policy(previous_policy)


def build_pretrainer(config, image_size, total_steps, peak):
    """The backbone and the compiled pretrainer of a run's settings."""
    from keras_aim import optimizers
    from keras_aim.models.aim.aim_pretrainer import AIMPretrainer

    backbone = example_utils.build_backbone(
        (image_size, image_size, 3),
        config["preset"],
        patch_size=config["patch_size"],
        hidden_dim=config["hidden_dim"],
        num_layers=config["num_layers"],
        num_heads=config["num_heads"],
    )
    pretrainer = AIMPretrainer(
        backbone,
        head_hidden_dim=config["head_hidden_dim"],
        head_num_layers=config["head_num_layers"],
        token_order=config["token_order"],
        seed=config["seed"],
    )
    pretrainer.compile(
        optimizer=optimizers.pretraining_optimizer(
            total_steps,
            config["batch_size"],
            base_learning_rate=peak,
            base_batch_size=config["batch_size"],
            warmup_fraction=config["warmup_fraction"],
            weight_decay=config["weight_decay"],
        )
    )
    return backbone, pretrainer


def _start_batch_factory(build):
    """`start_batch -> dataset`: `train` asks for the stream from the step it
    resumes at (O(1): no consumed batch is read again)."""

    def factory(start_batch):
        return build(start_batch=start_batch)

    return factory


def write_report(
    pretrainer, source, image_size, output_dir, num_preview=8, seed=0
):
    """Writes the loss curve, the reconstruction grid and the backbone.

    Returns:
        `{"loss_plot": path, "reconstructions": path, "backbone": path}`.
    """
    from keras_aim import training
    from keras_aim.callbacks import ReconstructionGrid
    from keras_aim.utils import plots

    files = {
        "loss_plot": plots.plot_loss_curve(
            os.path.join(output_dir, training.LOG_FILE),
            os.path.join(output_dir, "loss.png"),
        )
    }
    if num_preview:
        images, what = example_utils.held_out_images(
            source, image_size, num_preview, seed
        )
        grid = ReconstructionGrid(
            images,
            os.path.join(output_dir, "reconstructions.png"),
            title=f"{what}: original | next-patch prediction (causal; each "
            "patch de-normalised with its target's mean and std)",
        )
        grid.set_model(pretrainer)
        grid.on_epoch_end(0)
        files["reconstructions"] = grid.written[-1]
    backbone_dir = os.path.join(output_dir, "backbone")
    pretrainer.backbone.save_to_preset(backbone_dir)
    files["backbone"] = backbone_dir
    return files


def print_summary(summary):
    if "files" not in summary:  # a data-parallel worker: the chief reports
        return
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
    probe = summary.get("probe")
    if probe:
        print(
            f"Attentive probe on held-out {probe['dataset']} (test top-1, "
            f"{probe['num_test']} images): pre-trained "
            f"{100 * probe['pretrained']['top1']:.1f}% | random twin (same "
            f"initial weights) {100 * probe['random_twin']['top1']:.1f}% | "
            f"raw pixels (logistic regression) "
            f"{100 * probe['raw_pixels_top1']:.1f}%."
        )


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # Quiet backend start-up.
    from keras_aim import training

    example_utils.prepare_tensorflow_devices(FLAGS.distribution, FLAGS.mesh)
    config = {name: FLAGS[name].value for name in DEFAULTS}
    if not FLAGS["steps"].present:
        config.pop("steps")
    begin = time.time()
    try:
        summary = run(**config)
    except training.TrainingDivergedError as error:
        print(f"\nERROR: {error}", file=sys.stderr)
        sys.exit(EXIT_DIVERGED)
    except ValueError as error:  # Bad settings, folder or checkpoint.
        print(f"\nERROR: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_SETTINGS)
    print_summary(summary)
    print(f"Total wall time {time.time() - begin:.0f} s.")
    if summary["interrupted"]:
        print(
            "Stopped by a signal after writing a checkpoint; rerun the same "
            "command to resume."
        )
        sys.exit(128 + summary["interrupted"])


if __name__ == "__main__":
    define_flags()
    app.run(main, flags_parser=example_utils.parse_flags)
