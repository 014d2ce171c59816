"""Fine-tune an AIM classifier: fully, with layer-wise decay, or with LoRA.

    python examples/finetune.py --preset=runs/pretrain/backbone \\
        --dataset=digits --lora_rank=8 --epochs=10 --learning_rate=1e-3
    python examples/finetune.py --preset=aim_600m --dataset=/data/flowers \\
        --lora_rank=0 --layer_decay=0.75 --learning_rate=1e-4

`--lora_rank` > 0 adds LoRA updates to the attention and MLP kernels of
every block (Keras' `Dense.enable_lora`) and freezes the rest of the
trunk; 0 fine-tunes every weight. `--layer_decay` < 1 gives block `i` of
`L` the rate `learning_rate * layer_decay ** (L - i)` (the embeddings
`** (L + 1)`, the head the full rate). The head is the attentive probe
on `--probe_layers`.

Writes `metrics.json` (`top1`, `top5`, `num_train`, `num_test`),
`confusion.png`, `classifier/` (the LoRA updates merged into the kernels)
and, with LoRA, `lora.weights.h5` (the LoRA matrices alone, for
`AIMBackbone.load_lora_weights`).
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import example_utils  # noqa: E402
import scaffold  # noqa: E402


@scaffold.writes(
    {
        "metrics.json": "file",
        "confusion.png": "file",
        "classifier": "preset",
        "lora.weights.h5": "file",
    }
)
def run(
    preset,
    dataset="digits",
    lora_rank=8,
    layer_decay=1.0,
    probe_layers=None,
    probe="attentive",
    epochs=10,
    batch_size=32,
    learning_rate=1e-3,
    weight_decay=0.05,
    seed=0,
    output_dir="runs/finetune",
    verbose=1,
):
    """Fine-tunes and evaluates; returns the metrics dict."""
    import keras

    import keras_aim
    from keras_aim import data
    from keras_aim import probing
    from keras_aim.utils.validation import positive_int

    output_dir = example_utils.output_folder(output_dir)
    lora_rank = positive_int(lora_rank, "--lora_rank", minimum=0)
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"--layer_decay must be in (0, 1]; got {layer_decay}.")
    backbone, converter = example_utils.load_backbone(
        preset, None, probe_layers
    )
    keras.utils.set_random_seed(seed)
    if lora_rank:  # checks the rank against the width before any data
        backbone.enable_lora(lora_rank)
    train = data.labelled_images(
        dataset, "train", image_converter=converter, seed=seed
    )
    test = data.labelled_images(
        dataset, "test", image_converter=converter, seed=seed
    )
    classifier = keras_aim.AIMImageClassifier(
        backbone,
        num_classes=train.num_classes,
        probe_layers=probe_layers,
        probe=probe,
        image_converter=converter,
        class_names=train.class_names,
    )
    trainable = sum(
        int(keras.ops.size(w)) for w in classifier.trainable_weights
    )
    probing.train_classifier(
        classifier,
        train,
        epochs=epochs,
        batch_size=batch_size,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        layer_decay=layer_decay,
        seed=seed,
        verbose=verbose,
    )
    logits, labels = probing.predict_logits(classifier, test, batch_size)
    metrics = probing.classification_metrics(logits, labels, train.num_classes)
    files = {}
    if lora_rank:
        files["lora"] = os.path.join(output_dir, "lora.weights.h5")
        backbone.save_lora_weights(files["lora"])
    files["classifier"] = os.path.join(output_dir, "classifier")
    classifier.save_to_preset(files["classifier"])
    metrics.update(
        num_train=train.num_examples - len(train.skipped),
        trainable_parameters=trainable,
        lora_rank=lora_rank,
        layer_decay=layer_decay,
        probe_layers=classifier.probe_layers,
        preset=str(preset),
        dataset=str(dataset),
        class_names=train.class_names,
        skipped_files=[p for p, _ in train.skipped + test.skipped],
        files=files,
    )
    what = f"LoRA rank {lora_rank}" if lora_rank else "full fine-tuning"
    return example_utils.write_metrics(
        output_dir, metrics, train.class_names, f"{what} on {dataset}"
    )


def report(metrics, settings):
    rank = settings["lora_rank"]
    what = f"LoRA rank {rank}" if rank else "fine-tuning"
    example_utils.print_metrics(
        metrics, f"{what} ({metrics['trainable_parameters']:,} trainable)"
    )


SCRIPT = scaffold.Script(
    run,
    scaffold.flag("preset"),
    scaffold.flag("dataset"),
    scaffold.flag(
        "lora_rank", "integer", "LoRA rank; 0 = full fine-tuning.", minimum=0
    ),
    scaffold.flag(
        "layer_decay",
        "float",
        "Layer-wise learning-rate decay in (0, 1]; 1 = none.",
        positive=True,
        maximum=1.0,
    ),
    scaffold.flag("probe_layers", help="best, last or I,J,... for the head."),
    scaffold.flag("probe"),
    scaffold.flag("epochs"),
    scaffold.flag("batch_size"),
    scaffold.flag("learning_rate"),
    scaffold.flag("weight_decay"),
    scaffold.flag("seed", help="Seed of the new weights and batch order."),
    scaffold.flag("output_dir"),
    report=report,
    extra=scaffold.terminal_verbose,
)
main = SCRIPT.main
define_flags = SCRIPT.define_flags

if __name__ == "__main__":
    SCRIPT.cli()
