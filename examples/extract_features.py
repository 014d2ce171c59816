"""Extract AIM features of a dataset into `features.npz`.

    python examples/extract_features.py --preset=runs/pretrain/backbone \\
        --dataset=digits --layers=2,3 --pool=mean

`--layers` takes comma-separated 0-based blocks (their raw outputs, before
the final LayerNorm) and/or `final` (the backbone's output tokens).
`features.npz` holds one array per layer (`block_I`, `final`), each
`(N, tokens, width)` or `(N, width)` with `--pool=mean`, and `labels` when
the data has them.
"""

import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import example_utils  # noqa: E402
import scaffold  # noqa: E402


def parse_layers(layers, num_layers):
    """`["2", "final"]` -> `[2, "final"]`, checked against the depth."""
    if isinstance(layers, str):
        layers = layers.split(",")
    parsed = []
    for item in layers:
        item = str(item).strip()
        if item != "final":
            try:
                item = int(item)
            except ValueError:
                raise ValueError(
                    "--layers takes 0-based block indices and/or final; got "
                    f"{item!r}."
                ) from None
            if not 0 <= item < num_layers:
                raise ValueError(
                    f"--layers block {item} is out of range: the backbone has "
                    f"{num_layers} blocks (0..{num_layers - 1})."
                )
        if item in parsed:
            raise ValueError(f"--layers names {item!r} twice.")
        parsed.append(item)
    if not parsed:
        raise ValueError("--layers must name blocks I,J,... and/or final.")
    return parsed


@scaffold.writes({"features.npz": "file"})
def run(
    preset,
    dataset="digits",
    layers=("final",),
    pool="none",
    split="auto",
    batch_size=64,
    output_dir="runs/features",
    verbose=1,
):
    """Extracts the features; returns `{name: shape}`."""
    import keras
    import numpy as np

    from keras_aim import data

    output_dir = example_utils.output_folder(output_dir)
    backbone, converter = example_utils.load_backbone(preset)
    layers = parse_layers(layers, backbone.num_layers)
    split = example_utils.split_for(dataset, split)
    images = data.labelled_images(dataset, split, image_converter=converter)
    inputs = keras.Input(shape=backbone.image_shape)
    blocks = [layer for layer in layers if layer != "final"]
    outputs = backbone.extract_features(inputs, blocks) if blocks else []
    outputs = dict(zip([f"block_{b}" for b in blocks], outputs))
    if "final" in layers:
        outputs["final"] = backbone(inputs)
    if pool == "mean":
        outputs = {k: keras.ops.mean(v, axis=1) for k, v in outputs.items()}
    model = keras.Model(inputs, outputs)
    arrays = {name: [] for name in outputs}
    labels = []
    progress = keras.utils.Progbar(images.num_examples, verbose=verbose)
    for batch, batch_labels in images.batches(batch_size):
        result = model.predict_on_batch(np.asarray(batch))
        for name in arrays:
            arrays[name].append(np.asarray(result[name], "float32"))
        labels.append(np.asarray(batch_labels))
        progress.add(len(labels[-1]))
    images.check_decoded(sum(len(b) for b in labels))
    if not labels:
        raise ValueError(f"No image of {dataset!r} could be read.")
    out = {name: np.concatenate(parts) for name, parts in arrays.items()}
    out["labels"] = np.concatenate(labels).astype("int32")
    path = os.path.join(output_dir, "features.npz")
    temporary = f"{path}.tmp-{uuid.uuid4().hex[:12]}.npz"
    try:
        np.savez(temporary, **out)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return {name: array.shape for name, array in out.items()}, path


def report(result, settings):
    shapes, path = result
    listing = ", ".join(f"{k} {v}" for k, v in shapes.items())
    print(f"Wrote {path}: {listing}.")


SCRIPT = scaffold.Script(
    run,
    scaffold.flag("preset"),
    scaffold.flag("dataset"),
    scaffold.flag("layers", "list", "Blocks I,J,... and/or final."),
    scaffold.flag("pool", "enum", "Token pooling.", values=("none", "mean")),
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
