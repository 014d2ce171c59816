"""Converts released AIM checkpoints into Keras preset folders.

Usage:

    python -m keras_aim.convert SOURCE --output FOLDER [--head HEAD.pth]
        [--preset NAME] [--num-heads N] [--dtype bfloat16]
        [--probe-layers best|last|14,15,...] [--image-size N|any]
        [--overwrite]

SOURCE is a folder in the released hub layout (`config.json` +
`model.safetensors`, as in `apple/aim-600M`, or an AIMv2 one such as
`apple/aimv2-large-patch14-224`, in the release's or transformers' key
layout; the LiT folder `apple/aimv2-large-patch14-224-lit` gives an
`AIMv2LiT` with its tokenizer) or a backbone `.pth` file of the
`apple/AIM` release, optionally with its head `.pth` (`--head`). The
architecture is read from the tensors' shapes; the number of heads comes
from `--num-heads`, the preset name (`--preset aim_600m`) or the hub
config. The result is a Keras preset folder that
`keras_aim.AIMBackbone.from_preset(FOLDER)` (or `AIMImageClassifier`, when
a head was converted) loads. Bad input exits with status 2 and a message.

Example:

    python -m keras_aim.convert aim_600m_2bimgs_attnprobe_backbone.pth \\
        --head aim_600m_2bimgs_attnprobe_head_best_layers.pth \\
        --preset aim_600m --output ./aim_600m_keras
"""

import argparse
import os

from keras_aim.convert.aimv2_loaders import AIMv2CheckpointLoader
from keras_aim.convert.loaders import ReleasedCheckpointLoader
from keras_aim.convert.readers import open_state_dict
from keras_aim.convert.released_aim import has_head
from keras_aim.convert.released_aim import infer_config
from keras_aim.convert.released_aim import read_hub_config
from keras_aim.convert.released_aimv2 import is_aimv2_config
from keras_aim.models.aim import aim_presets as presets
from keras_aim.models.aim.aim_backbone import AIMBackbone
from keras_aim.models.aim.aim_image_classifier import AIMImageClassifier
from keras_aim.models.aimv2 import aimv2_presets
from keras_aim.models.aimv2.aimv2_backbone import AIMv2Backbone
from keras_aim.models.aimv2.aimv2_lit import AIMv2LiT

DTYPES = ("float32", "bfloat16", "float16")


def _parser():
    parser = argparse.ArgumentParser(
        prog="python -m keras_aim.convert",
        description=(
            "Convert released AIM checkpoints (a hub folder, or backbone "
            "and head .pth files) into a Keras preset folder."
        ),
    )
    parser.add_argument(
        "source",
        metavar="SOURCE",
        help="hub folder (config.json + model.safetensors) or backbone "
        ".pth / .safetensors file",
    )
    parser.add_argument(
        "--output", required=True, help="Keras preset folder to write"
    )
    parser.add_argument("--head", help="head .pth file (apple/AIM layout)")
    parser.add_argument(
        "--preset",
        help="released size (aim_600m, aim_1b, aim_3b, aim_7b, or an AIMv2 "
        "name such as aimv2_large_patch14_224): gives the number of heads "
        "and is checked against the tensors",
    )
    parser.add_argument("--num-heads", type=int, help="attention heads")
    parser.add_argument(
        "--dtype",
        default="float32",
        help=f"variable dtype of the preset, one of {', '.join(DTYPES)}",
    )
    parser.add_argument(
        "--probe-layers",
        help='probe blocks of the head: "best", "last" or comma-separated '
        "0-based indices (default: the hub config, the head file name, "
        'else "best" for released sizes and "last" otherwise)',
    )
    parser.add_argument(
        "--image-size",
        help='input size the preset is built for: an int, or "any" for '
        "any size divisible by the patch size (default: the hub config's "
        "img_size, else 224)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty output folder",
    )
    return parser


def _probe_layers(text):
    if text is None or text in ("best", "last"):
        return text
    try:
        return [int(i) for i in text.split(",") if i.strip()]
    except ValueError as error:
        raise ValueError(
            f'--probe-layers must be "best", "last" or comma-separated '
            f"integers; got {text!r}."
        ) from error


def _image_shape(text, num_channels=3):
    if text is None:
        return None
    if text == "any":
        return (None, None, num_channels)
    try:
        size = int(text)
    except ValueError as error:
        raise ValueError(
            f'--image-size must be a positive integer or "any"; got {text!r}.'
        ) from error
    if size <= 0:
        raise ValueError(f"--image-size must be positive; got {size}.")
    return (size, size, num_channels)


def _resolve_num_heads(args, preset_spec, hub_heads):
    num_heads = args.num_heads
    if preset_spec is not None:
        preset_heads = preset_spec["backbone"]["num_heads"]
        if num_heads is not None and num_heads != preset_heads:
            raise ValueError(
                f"--num-heads {num_heads} contradicts --preset {args.preset}, "
                f"which has {preset_heads} heads."
            )
        num_heads = preset_heads
    if num_heads is None:
        num_heads = hub_heads
    if num_heads is None:
        raise ValueError(
            "The number of attention heads is not stored in .pth tensors; "
            "pass --preset (aim_600m, aim_1b, aim_3b, aim_7b) or --num-heads."
        )
    return num_heads


def _check_against_preset(name, spec, inferred):
    arch = spec["backbone"]
    for key in ("patch_size", "hidden_dim", "num_layers"):
        if arch[key] != inferred[key]:
            raise ValueError(
                f"--preset {name} has {key}={arch[key]} but the checkpoint's "
                f"tensors have {key}={inferred[key]}; drop --preset and pass "
                "--num-heads for a custom size."
            )


def convert(args):
    """Runs the conversion for parsed arguments; returns the model."""
    if args.dtype not in DTYPES:
        raise ValueError(
            f"--dtype must be one of {', '.join(DTYPES)}; got {args.dtype!r}."
        )
    output = os.fspath(args.output)
    if os.path.isfile(output):
        raise ValueError(f"--output {output} is a file; pass a folder.")
    if os.path.isdir(output) and os.listdir(output) and not args.overwrite:
        raise ValueError(
            f"--output {output} is not empty; pass --overwrite to write there."
        )
    source = os.fspath(args.source)
    if os.path.isdir(source) and is_aimv2_config(read_hub_config(source)):
        return _convert_aimv2(args, source, output)
    spec = None
    if args.preset is not None:
        spec = presets.PRESETS[presets.check_preset_name(args.preset)]
    probe_layers = _probe_layers(args.probe_layers)
    if not os.path.exists(source):
        raise FileNotFoundError(f"SOURCE {source} does not exist.")
    sources = {os.path.realpath(source)}
    if os.path.isfile(source):
        sources.add(os.path.realpath(os.path.dirname(source) or "."))
    if os.path.realpath(output) in sources:
        raise ValueError(
            f"--output {output} is the source's own folder; writing the "
            "preset there would replace the released files. Pass another "
            "folder."
        )
    if os.path.isdir(source):
        if args.head is not None:
            raise ValueError(
                "--head goes with a backbone .pth file; a hub folder holds "
                "its head inside model.safetensors."
            )
        loader = ReleasedCheckpointLoader.from_hub_folder(source)
    else:
        if args.head is not None and not os.path.isfile(args.head):
            raise FileNotFoundError(f"--head {args.head} does not exist.")
        loader = ReleasedCheckpointLoader.from_pth(source, args.head)
    with open_state_dict(*loader.paths) as reader:
        inferred = infer_config(reader)
        with_head = has_head(reader.keys())
    if spec is not None:
        _check_against_preset(args.preset, spec, inferred)
    loader.num_heads = _resolve_num_heads(args, spec, loader.num_heads)
    options = dict(
        image_shape=_image_shape(args.image_size, inferred["num_channels"]),
        dtype=None if args.dtype == "float32" else args.dtype,
    )
    if with_head:
        model = loader.load_task(
            AIMImageClassifier, probe_layers=probe_layers, **options
        )
    elif probe_layers is not None:
        raise ValueError(
            "--probe-layers chooses the blocks of a classification head, but "
            f"{source} has no head tensors; pass --head HEAD.pth."
        )
    else:
        model = loader.load_backbone(AIMBackbone, **options)
    model.save_to_preset(output)
    return model


def _convert_aimv2(args, source, output):
    """Converts an AIMv2 hub folder (either key layout) into a preset."""
    if os.path.realpath(output) == os.path.realpath(source):
        raise ValueError(
            f"--output {output} is the source's own folder; pass another one."
        )
    if args.head is not None or args.probe_layers is not None:
        raise ValueError(
            "--head and --probe-layers go with AIM classification heads; an "
            "AIMv2 hub folder holds no classification head."
        )
    loader = AIMv2CheckpointLoader.from_hub_folder(source)
    with open_state_dict(*loader.paths) as reader:
        inferred = loader.architecture(reader)
    if args.preset is not None:
        name = aimv2_presets.check_preset_name(args.preset)
        arch = aimv2_presets.PRESETS[name]["backbone"]
        for key in ("patch_size", "hidden_dim", "num_layers"):
            if arch[key] != inferred[key]:
                raise ValueError(
                    f"--preset {name} has {key}={arch[key]} but the "
                    f"checkpoint's tensors have {key}={inferred[key]}."
                )
        if args.num_heads not in (None, arch["num_heads"]):
            raise ValueError(
                f"--num-heads {args.num_heads} contradicts --preset {name}, "
                f"which has {arch['num_heads']} heads."
            )
        loader.num_heads = arch["num_heads"]
    if args.num_heads is not None:
        loader.num_heads = args.num_heads
    options = dict(
        image_shape=_image_shape(args.image_size, inferred["num_channels"]),
        dtype=None if args.dtype == "float32" else args.dtype,
    )
    if options["image_shape"] is None:
        del options["image_shape"]
    if inferred["prefix"]:  # A LiT checkpoint: both towers.
        model = loader.load_lit(AIMv2LiT, **options)
    else:
        model = loader.load_backbone(AIMv2Backbone, **options)
    model.save_to_preset(output)
    return model


def main(argv=None):
    """Command-line entry point; returns the process exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        model = convert(args)
    except (ValueError, FileNotFoundError, ImportError) as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    backbone = getattr(model, "backbone", None)
    backbone = getattr(model, "image_encoder", backbone) or model
    what = type(model).__name__
    if what == "AIMImageClassifier":
        what += f" (probe_layers={model.probe_layers})"
    print(
        f"Wrote {what} to {args.output}: hidden_dim={backbone.hidden_dim}, "
        f"num_layers={backbone.num_layers}, num_heads={backbone.num_heads}, "
        f"patch_size={backbone.patch_size}, image_shape="
        f"{backbone.image_shape}, dtype={args.dtype}, "
        f"{model.count_params():,} parameters."
    )
    return 0
