"""Fine-tuning a whole classifier (full or LoRA), with layer-wise decay."""

from keras_aim import optimizers
from keras_aim.probing.divergence import fit_or_diverge
from keras_aim.probing.features import IndexedBatches
from keras_aim.probing.metrics import check_labels
from keras_aim.probing.probes import compile_probe
from keras_aim.utils.validation import positive_int


def train_classifier(
    classifier,
    train,
    epochs=10,
    batch_size=32,
    learning_rate=1e-4,
    weight_decay=0.05,
    layer_decay=None,
    seed=0,
    verbose=1,
):
    """Fine-tunes a whole classifier (whatever of it is trainable).

    With `layer_decay` in (0, 1), block `i` of `L` learns at
    `learning_rate * layer_decay ** (L - i)` and the embeddings at
    `layer_decay ** (L + 1)` (`optimizers.LayerDecayAdamW`). A NaN or
    infinite loss stops training and raises `TrainingDivergedError`.
    """
    x, y = train.to_arrays()
    check_labels(y, classifier.num_classes)
    # Weights off the classifier's path get no gradient: the final
    # LayerNorm (the probe reads raw block outputs) and later blocks.
    backbone = classifier.backbone
    backbone.post_trunk_norm.trainable = False
    for block in backbone.transformer_blocks[
        max(classifier.probe_layers) + 1 :
    ]:
        block.trainable = False
    batches = IndexedBatches(x, y, positive_int(batch_size, "batch_size"), seed)
    total = positive_int(epochs, "epochs") * len(batches)
    optimizer = None
    if layer_decay is not None and layer_decay != 1.0:
        optimizer = optimizers.layer_decay_optimizer(
            classifier.backbone.num_layers,
            layer_decay,
            total_steps=total,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
        )
    compile_probe(classifier, total, learning_rate, weight_decay, optimizer)
    fit_or_diverge(classifier, batches, epochs, verbose)
    return classifier
