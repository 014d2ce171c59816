"""The built-in AIMv2 presets: pure data, imported by models and loaders.

Every vision encoder of the AIMv2 release (Fini et al., 2024, "Multimodal
Autoregressive Pre-training of Large Vision Encoders"; apple/ml-aim,
`aim-v2/`): its architecture (from `aim-v2/aim/v2/torch/models.py`), its
exact parameter count (the trunk alone: conv patch embedding with bias,
RMSNorm weights, the learned position table where there is one, fused
qkv, projection and three SwiGLU matrices per block), its Hugging Face hub
repository, the hub revision the release pins (`aim-v2/aim/v2/utils.py`,
`MODELS`) and the frozen-trunk ImageNet-1k top-1 of the release's README
(`None` where it gives none). `aimv2_large_patch14_224_lit` is the image
tower of the LiT checkpoint (its trunk; the attention-pool head, the
projection and the text tower belong to the LiT model, whose sizes are
under its `"lit"` key). This module imports nothing.
"""

PRESETS = {
    "aimv2_large_patch14_224": {
        "backbone": {
            "image_shape": (224, 224, 3),
            "patch_size": 14,
            "hidden_dim": 1024,
            "num_layers": 24,
            "num_heads": 8,
            "intermediate_dim": 2816,
            "position_embedding": "absolute",
        },
        "parameter_count": 309_197_824,
        "hub_repo": "apple/aimv2-large-patch14-224",
        "revision": "ac764a25c832c7dc5e11871daa588e98e3cdbfb7",
        "imagenet_top1": 86.6,
        "description": "AIMv2-Large at 224px; IN-1k frozen trunk 86.6",
    },
    "aimv2_huge_patch14_224": {
        "backbone": {
            "image_shape": (224, 224, 3),
            "patch_size": 14,
            "hidden_dim": 1536,
            "num_layers": 24,
            "num_heads": 12,
            "intermediate_dim": 4096,
            "position_embedding": "absolute",
        },
        "parameter_count": 680_851_968,
        "hub_repo": "apple/aimv2-huge-patch14-224",
        "revision": "9e0bab0e0abb7b20796d2d0b37f39b7c3b1c1af1",
        "imagenet_top1": 87.5,
        "description": "AIMv2-Huge at 224px; IN-1k frozen trunk 87.5",
    },
    "aimv2_1b_patch14_224": {
        "backbone": {
            "image_shape": (224, 224, 3),
            "patch_size": 14,
            "hidden_dim": 2048,
            "num_layers": 24,
            "num_heads": 16,
            "intermediate_dim": 5632,
            "position_embedding": "absolute",
        },
        "parameter_count": 1_234_958_336,
        "hub_repo": "apple/aimv2-1B-patch14-224",
        "revision": "4d24a422f71e87d327d476bc405030fe6593d8b1",
        "imagenet_top1": 88.1,
        "description": "AIMv2-1B at 224px; IN-1k frozen trunk 88.1",
    },
    "aimv2_3b_patch14_224": {
        "backbone": {
            "image_shape": (224, 224, 3),
            "patch_size": 14,
            "hidden_dim": 3072,
            "num_layers": 24,
            "num_heads": 24,
            "intermediate_dim": 8192,
            "position_embedding": "absolute",
        },
        "parameter_count": 2_720_658_432,
        "hub_repo": "apple/aimv2-3B-patch14-224",
        "revision": "df1cbc288096c9742ec8bd6709ff82757972338c",
        "imagenet_top1": 88.5,
        "description": "AIMv2-3B at 224px; IN-1k frozen trunk 88.5",
    },
    "aimv2_large_patch14_336": {
        "backbone": {
            "image_shape": (336, 336, 3),
            "patch_size": 14,
            "hidden_dim": 1024,
            "num_layers": 24,
            "num_heads": 8,
            "intermediate_dim": 2816,
            "position_embedding": "absolute",
        },
        "parameter_count": 309_525_504,
        "hub_repo": "apple/aimv2-large-patch14-336",
        "revision": "639423ae9f07319d24a7fc431b61908110d08d3a",
        "imagenet_top1": 87.6,
        "description": "AIMv2-Large at 336px; IN-1k frozen trunk 87.6",
    },
    "aimv2_huge_patch14_336": {
        "backbone": {
            "image_shape": (336, 336, 3),
            "patch_size": 14,
            "hidden_dim": 1536,
            "num_layers": 24,
            "num_heads": 12,
            "intermediate_dim": 4096,
            "position_embedding": "absolute",
        },
        "parameter_count": 681_343_488,
        "hub_repo": "apple/aimv2-huge-patch14-336",
        "revision": "21528bd53a2438a84162e79f1f9a46453b88004c",
        "imagenet_top1": 88.2,
        "description": "AIMv2-Huge at 336px; IN-1k frozen trunk 88.2",
    },
    "aimv2_1b_patch14_336": {
        "backbone": {
            "image_shape": (336, 336, 3),
            "patch_size": 14,
            "hidden_dim": 2048,
            "num_layers": 24,
            "num_heads": 16,
            "intermediate_dim": 5632,
            "position_embedding": "absolute",
        },
        "parameter_count": 1_235_613_696,
        "hub_repo": "apple/aimv2-1B-patch14-336",
        "revision": "5a15f23f6757776fdd487283353a018677621939",
        "imagenet_top1": 88.7,
        "description": "AIMv2-1B at 336px; IN-1k frozen trunk 88.7",
    },
    "aimv2_3b_patch14_336": {
        "backbone": {
            "image_shape": (336, 336, 3),
            "patch_size": 14,
            "hidden_dim": 3072,
            "num_layers": 24,
            "num_heads": 24,
            "intermediate_dim": 8192,
            "position_embedding": "absolute",
        },
        "parameter_count": 2_721_641_472,
        "hub_repo": "apple/aimv2-3B-patch14-336",
        "revision": "d1adb39ee92dfd7ecf3114b1ee3aa7e9027ce98f",
        "imagenet_top1": 89.2,
        "description": "AIMv2-3B at 336px; IN-1k frozen trunk 89.2",
    },
    "aimv2_large_patch14_448": {
        "backbone": {
            "image_shape": (448, 448, 3),
            "patch_size": 14,
            "hidden_dim": 1024,
            "num_layers": 24,
            "num_heads": 8,
            "intermediate_dim": 2816,
            "position_embedding": "absolute",
        },
        "parameter_count": 309_984_256,
        "hub_repo": "apple/aimv2-large-patch14-448",
        "revision": "cefb13f21003bdadba65bfbee956c82b976cd23d",
        "imagenet_top1": 87.9,
        "description": "AIMv2-Large at 448px; IN-1k frozen trunk 87.9",
    },
    "aimv2_huge_patch14_448": {
        "backbone": {
            "image_shape": (448, 448, 3),
            "patch_size": 14,
            "hidden_dim": 1536,
            "num_layers": 24,
            "num_heads": 12,
            "intermediate_dim": 4096,
            "position_embedding": "absolute",
        },
        "parameter_count": 682_031_616,
        "hub_repo": "apple/aimv2-huge-patch14-448",
        "revision": "44e6440a24a8ea966ad0deadf5399a22d852bcc0",
        "imagenet_top1": 88.6,
        "description": "AIMv2-Huge at 448px; IN-1k frozen trunk 88.6",
    },
    "aimv2_1b_patch14_448": {
        "backbone": {
            "image_shape": (448, 448, 3),
            "patch_size": 14,
            "hidden_dim": 2048,
            "num_layers": 24,
            "num_heads": 16,
            "intermediate_dim": 5632,
            "position_embedding": "absolute",
        },
        "parameter_count": 1_236_531_200,
        "hub_repo": "apple/aimv2-1B-patch14-448",
        "revision": "7f292735d3a07a911559c0fabb3ad3e9d141713f",
        "imagenet_top1": 89.0,
        "description": "AIMv2-1B at 448px; IN-1k frozen trunk 89.0",
    },
    "aimv2_3b_patch14_448": {
        "backbone": {
            "image_shape": (448, 448, 3),
            "patch_size": 14,
            "hidden_dim": 3072,
            "num_layers": 24,
            "num_heads": 24,
            "intermediate_dim": 8192,
            "position_embedding": "absolute",
        },
        "parameter_count": 2_723_017_728,
        "hub_repo": "apple/aimv2-3B-patch14-448",
        "revision": "70810b618e4456b724bacc8ef4d2d038060ceda6",
        "imagenet_top1": 89.5,
        "description": "AIMv2-3B at 448px; IN-1k frozen trunk 89.5",
    },
    "aimv2_large_patch14_224_distilled": {
        "backbone": {
            "image_shape": (224, 224, 3),
            "patch_size": 14,
            "hidden_dim": 1024,
            "num_layers": 24,
            "num_heads": 8,
            "intermediate_dim": 2816,
            "position_embedding": "absolute",
        },
        "parameter_count": 309_197_824,
        "hub_repo": "apple/aimv2-large-patch14-224-distilled",
        "revision": "d6d09b071e8ba31735c5e05ccd4b2a393020ce90",
        "imagenet_top1": None,
        "description": (
            "AIMv2-Large at 224px distilled from AIMv2-3B (for multimodal use)"
        ),
    },
    "aimv2_large_patch14_336_distilled": {
        "backbone": {
            "image_shape": (336, 336, 3),
            "patch_size": 14,
            "hidden_dim": 1024,
            "num_layers": 24,
            "num_heads": 8,
            "intermediate_dim": 2816,
            "position_embedding": "absolute",
        },
        "parameter_count": 309_525_504,
        "hub_repo": "apple/aimv2-large-patch14-336-distilled",
        "revision": "8fe1704e5cc1c80cefc99c194afcefe21dff1faa",
        "imagenet_top1": None,
        "description": (
            "AIMv2-Large at 336px distilled from AIMv2-3B (for multimodal use)"
        ),
    },
    "aimv2_large_patch14_native": {
        "backbone": {
            "image_shape": (224, 224, 3),
            "patch_size": 14,
            "hidden_dim": 1024,
            "num_layers": 24,
            "num_heads": 8,
            "intermediate_dim": 2816,
            "position_embedding": "sincos",
        },
        "parameter_count": 308_935_680,
        "hub_repo": "apple/aimv2-large-patch14-native",
        "revision": "cfe7bdbbc924a5f65272d5e2c27fe5f61771a629",
        "imagenet_top1": 87.3,
        "description": (
            "AIMv2-Large, any resolution and aspect ratio (sin-cos "
            "positions); IN-1k frozen trunk 87.3"
        ),
    },
    "aimv2_large_patch14_224_lit": {
        "backbone": {
            "image_shape": (224, 224, 3),
            "patch_size": 14,
            "hidden_dim": 1024,
            "num_layers": 24,
            "num_heads": 8,
            "intermediate_dim": 2816,
            "position_embedding": "absolute",
        },
        "parameter_count": 309_197_824,
        "hub_repo": "apple/aimv2-large-patch14-224-lit",
        "revision": "c2cd59a786c4c06f39d199c50d08cc2eab9f8605",
        "imagenet_top1": None,
        "description": (
            "AIMv2-Large image tower after LiT tuning (zero-shot IN-1k "
            "77.0 with its text tower)"
        ),
        # The whole LiT model (keras_aim.AIMv2LiT): `backbone` above is its
        # image trunk; the attention-pool head has the trunk's 8 heads.
        "lit": {
            "text": {
                "vocabulary_size": 49408,
                "hidden_dim": 768,
                "num_layers": 12,
                "num_heads": 6,
                "intermediate_dim": 2048,
                "max_sequence_length": 77,
                "eos_token_id": 49407,
            },
            "projection_dim": 768,
            "max_logit_scale": 100.0,
            "parameter_count": 436_680_193,
            "zero_shot_top1": 77.0,
        },
    },
}
DEFAULT_IMAGE_SHAPE = (224, 224, 3)


def check_preset_name(name):
    """Returns `name` if it is a built-in AIMv2 preset; else a `ValueError`."""
    if name not in PRESETS:
        raise ValueError(
            f"Unknown preset {name!r}. Built-in AIMv2 presets: "
            f"{', '.join(PRESETS)}; or pass a folder (a Keras preset folder "
            "or an AIMv2 hub folder with config.json + model.safetensors)."
        )
    return name


def parameter_count(
    image_shape,
    patch_size,
    hidden_dim,
    num_layers,
    intermediate_dim,
    position_embedding="absolute",
    position_grid_size=None,
    **unused,
):
    """The exact parameter count of an AIMv2 trunk, from its config.

    Counts without building anything (for the 3B, 2.7 billion parameters).

    Example:

    >>> parameter_count(**PRESETS["aimv2_large_patch14_224"]["backbone"])
    309197824
    """
    del unused
    channels = image_shape[-1]
    if position_embedding == "sincos":
        num_positions = 0
    elif position_grid_size is not None:
        num_positions = position_grid_size[0] * position_grid_size[1]
    else:
        num_positions = (image_shape[0] // patch_size) * (
            image_shape[1] // patch_size
        )
    width = hidden_dim
    patch = patch_size * patch_size * channels * width + width + width
    block = 4 * width * width + 3 * width * intermediate_dim + 2 * width
    return patch + num_positions * width + num_layers * block + width


def text_parameter_count(
    vocabulary_size,
    hidden_dim,
    num_layers,
    intermediate_dim,
    max_sequence_length,
    **unused,
):
    """The exact parameter count of a LiT text tower, from its config:
    token and position tables, the blocks and the final RMSNorm.

    Example:

    >>> text_parameter_count(
    ...     **PRESETS["aimv2_large_patch14_224_lit"]["lit"]["text"])
    122958336
    """
    del unused
    width = hidden_dim
    block = 4 * width * width + 3 * width * intermediate_dim + 2 * width
    tables = (vocabulary_size + max_sequence_length) * width
    return tables + num_layers * block + width


def lit_parameter_count(backbone, text, projection_dim):
    """The exact parameter count of an AIMv2 LiT model: the image trunk,
    its attention-pool head (query, key, value, output with bias), the
    text tower, both projections (no bias) and the temperature.

    Example:

    >>> spec = PRESETS["aimv2_large_patch14_224_lit"]
    >>> lit_parameter_count(spec["backbone"], spec["lit"]["text"], 768)
    436680193
    """
    width = backbone["hidden_dim"]
    head = width + 3 * width * width + width
    projections = (width + text["hidden_dim"]) * projection_dim
    return (
        parameter_count(**backbone)
        + head
        + text_parameter_count(**text)
        + projections
        + 1
    )
