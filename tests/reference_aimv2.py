"""Independent float64 NumPy reference of the AIMv2 vision trunk, for tests.

Beside `tests/reference.py` (AIM v1; this one would not fit in that file's
500 lines). Written from the AIMv2 release's description (Fini et al.,
2024; apple/ml-aim `aim-v2/aim/v2/torch/`): conv patch embedding with
bias, RMSNorm (epsilon 1e-5, weight only), a learned position table (or
the 2-D sin-cos table of the native model), pre-norm blocks with fused-qkv
attention and a SwiGLU MLP `fc2(silu(fc1 x) * fc3 x)`, no biases, a final
RMSNorm. It imports nothing of keras_aim.

It also writes small checkpoints in both AIMv2 key layouts: the release's
(the pinned hub revisions) and transformers' (later revisions), plain or
nested as the LiT checkpoint's image tower.
"""

import math

import numpy as np

from tests.reference import _attention
from tests.reference import _merge_heads
from tests.reference import _split_heads
from tests.reference import numpy_sincos_2d

RMS_NORM_EPSILON = 1e-5


def random_state_dict_v2(
    hidden_dim=48,
    num_layers=2,
    intermediate_dim=128,
    patch_size=4,
    num_channels=3,
    grid=(7, 7),
    seed=0,
):
    """Random AIMv2 trunk tensors in the release's layout (torch shapes).

    `grid=None` gives the native model (no position table). Norm weights
    are drawn around 1 so that a wrong epsilon or a missing scale shows.
    """
    rng = np.random.default_rng(seed)
    d, h, p = hidden_dim, intermediate_dim, patch_size

    def normal(*shape, scale=0.2):
        return rng.normal(0.0, scale, size=shape).astype(np.float32)

    def norm_weight():
        return (1.0 + rng.normal(0.0, 0.2, size=(d,))).astype(np.float32)

    sd = {
        "preprocessor.patchifier.proj.weight": normal(d, num_channels, p, p),
        "preprocessor.patchifier.proj.bias": normal(d),
        "preprocessor.patchifier.norm.weight": norm_weight(),
        "trunk.post_trunk_norm.weight": norm_weight(),
    }
    if grid is not None:
        sd["preprocessor.pos_embed"] = normal(1, grid[0] * grid[1], d)
    for i in range(num_layers):
        b = f"trunk.blocks.{i}."
        sd[b + "norm_1.weight"] = norm_weight()
        sd[b + "attn.qkv.weight"] = normal(3 * d, d, scale=d**-0.5)
        sd[b + "attn.proj.weight"] = normal(d, d, scale=d**-0.5)
        sd[b + "norm_2.weight"] = norm_weight()
        sd[b + "mlp.fc1.weight"] = normal(h, d, scale=d**-0.5)
        sd[b + "mlp.fc3.weight"] = normal(h, d, scale=d**-0.5)
        sd[b + "mlp.fc2.weight"] = normal(d, h, scale=h**-0.5)
    return sd


def to_transformers_layout(sd):
    """The same tensors under transformers' `Aimv2VisionModel` keys."""
    out = {}
    for key, value in sd.items():
        if key == "preprocessor.pos_embed":
            out["embeddings.position_embedding.weight"] = value[0]
            continue
        if key.endswith("attn.qkv.weight"):
            stem = key.replace("trunk.blocks.", "encoder.layers.")
            stem = stem.replace("attn.qkv.weight", "attention.")
            for name, part in zip("qkv", np.split(value, 3, axis=0)):
                out[f"{stem}{name}_proj.weight"] = part
            continue
        for old, new in (
            ("preprocessor.patchifier.proj.", "embeddings.patch_embed."),
            ("preprocessor.patchifier.norm.", "embeddings.rms_norm."),
            ("trunk.post_trunk_norm.", "rms_norm."),
            ("trunk.blocks.", "encoder.layers."),
            ("attn.proj.", "attention.out_proj."),
            ("norm_1.", "rms_norm1."),
            ("norm_2.", "rms_norm2."),
            ("mlp.fc1.", "ffn.gate_proj."),
            ("mlp.fc3.", "ffn.up_proj."),
            ("mlp.fc2.", "ffn.down_proj."),
        ):
            key = key.replace(old, new)
        out[key] = value
    return out


def as_lit(sd, layout="release", seed=1):
    """`sd` as the LiT checkpoint's image tower, with the other LiT tensors
    (pooling head, projections, a one-block text tower, temperature)."""
    rng = np.random.default_rng(seed)
    d = sd[
        "preprocessor.patchifier.proj.bias"
        if layout == "release"
        else "embeddings.patch_embed.bias"
    ].shape[0]

    def normal(*shape):
        return rng.normal(0.0, 0.1, size=shape).astype(np.float32)

    if layout == "release":
        prefix = "image_encoder."
        extra = {
            "image_encoder.head.cls_token": normal(1, 1, d),
            "image_encoder.head.k.weight": normal(d, d),
            "image_encoder.head.v.weight": normal(d, d),
            "image_encoder.head.linear.weight": normal(d, d),
            "image_encoder.head.linear.bias": normal(d),
            "text_encoder.preprocessor.text_embedding.weight": normal(10, 8),
            "text_encoder.trunk.blocks.0.mlp.fc1.weight": normal(16, 8),
            "image_projector.weight": normal(12, d),
            "text_projector.weight": normal(12, 8),
            "log_logit_scale": np.float32(math.log(1 / 0.07)).reshape(()),
        }
    else:
        prefix = "vision_model."
        extra = {
            "vision_model.head.cls_token": normal(1, 1, d),
            "vision_model.head.k_proj.weight": normal(d, d),
            "vision_model.head.output_proj.bias": normal(d),
            "text_model.embeddings.token_embedding.weight": normal(10, 8),
            "visual_projection.weight": normal(12, d),
            "text_projection.weight": normal(12, 8),
            "logit_scale": np.float32(math.log(1 / 0.07)).reshape(()),
        }
    return {**{prefix + k: v for k, v in sd.items()}, **extra}


def rms_norm(x, weight, epsilon=RMS_NORM_EPSILON):
    x = np.asarray(x, np.float64)
    scale = 1.0 / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + epsilon)
    return x * scale * np.asarray(weight, np.float64)


def silu(x):
    return x / (1.0 + np.exp(-x))


def cubic(d, a=-0.75):
    """Keys' cubic kernel (PyTorch's bicubic uses a = -0.75)."""
    d = abs(d)
    if d <= 1:
        return (a + 2) * d**3 - (a + 3) * d**2 + 1
    if d < 2:
        return a * d**3 - 5 * a * d**2 + 8 * a * d - 4 * a
    return 0.0


def resize_bicubic(grid, out_h, out_w):
    """Bicubic resize of an `(h, w, D)` grid, one output sample at a time
    (half-pixel centres, edge indices clamped, no antialiasing)."""
    in_h, in_w, _ = grid.shape

    def taps(o, n_in, n_out):
        x = (o + 0.5) * n_in / n_out - 0.5
        base = math.floor(x)
        return [
            (min(max(base + k, 0), n_in - 1), cubic(x - (base + k)))
            for k in (-1, 0, 1, 2)
        ]

    out = np.zeros((out_h, out_w, grid.shape[-1]))
    for r in range(out_h):
        for c in range(out_w):
            for i, wi in taps(r, in_h, out_h):
                for j, wj in taps(c, in_w, out_w):
                    out[r, c] += wi * wj * grid[i, j]
    return out


def numpy_forward_v2(sd, images, num_heads, layers=None, grid=None):
    """The AIMv2 trunk in float64 on `(B, H, W, C)` images.

    Args:
        sd: tensors in the release's layout (`random_state_dict_v2`).
        images: NHWC images; any size divisible by the patch size.
        num_heads: attention heads.
        layers: block indices whose raw outputs to return as well.
        grid: `(rows, columns)` of the stored position table (square from
            its length when `None`).

    Returns:
        `tokens` (after the final RMSNorm), or `(tokens, [blocks])` when
        `layers` is given.
    """
    w = np.asarray(sd["preprocessor.patchifier.proj.weight"], np.float64)
    d, _, p, _ = w.shape
    x = np.asarray(images, np.float64)
    b, height, width, c = x.shape
    gh, gw = height // p, width // p
    patches = x[:, : gh * p, : gw * p].reshape(b, gh, p, gw, p, c)
    patches = patches.transpose(0, 1, 3, 5, 2, 4).reshape(b, gh * gw, -1)
    tokens = patches @ w.reshape(d, -1).T
    tokens = tokens + sd["preprocessor.patchifier.proj.bias"]
    tokens = rms_norm(tokens, sd["preprocessor.patchifier.norm.weight"])
    table = sd.get("preprocessor.pos_embed")
    if table is None:
        tokens = tokens + numpy_sincos_2d(gh, gw, d)
    else:
        table = np.asarray(table, np.float64)[0]
        if grid is None:
            side = math.isqrt(table.shape[0])
            grid = (side, side)
        table = table.reshape(grid[0], grid[1], d)
        if (gh, gw) != tuple(grid):
            table = resize_bicubic(table, gh, gw)
        tokens = tokens + table.reshape(gh * gw, d)
    num_layers = 1 + max(
        int(k.split(".")[2]) for k in sd if k.startswith("trunk.blocks.")
    )
    features = []
    for i in range(num_layers):

        def f(name, i=i):
            return np.asarray(sd[f"trunk.blocks.{i}.{name}"], np.float64)

        h = rms_norm(tokens, f("norm_1.weight"))
        q, k, v = np.split(h @ f("attn.qkv.weight").T, 3, axis=-1)
        attended = _attention(
            _split_heads(q, num_heads),
            _split_heads(k, num_heads),
            _split_heads(v, num_heads),
        )
        tokens = tokens + _merge_heads(attended) @ f("attn.proj.weight").T
        h = rms_norm(tokens, f("norm_2.weight"))
        hidden = silu(h @ f("mlp.fc1.weight").T) * (h @ f("mlp.fc3.weight").T)
        tokens = tokens + hidden @ f("mlp.fc2.weight").T
        features.append(tokens)
    out = rms_norm(tokens, sd["trunk.post_trunk_norm.weight"])
    if layers is None:
        return out
    return out, [features[i] for i in layers]


def hub_config_v2(sd, num_heads, image_size, layout="release", native=False):
    """A hub `config.json` for `sd` (remote-code or transformers style)."""
    d, c, p, _ = sd["preprocessor.patchifier.proj.weight"].shape
    h = sd["trunk.blocks.0.mlp.fc1.weight"].shape[0]
    num_layers = 1 + max(
        int(k.split(".")[2]) for k in sd if k.startswith("trunk.blocks.")
    )
    config = {
        "model_type": "aimv2" if layout == "release" else "aimv2_vision_model",
        "hidden_size": int(d),
        "intermediate_size": int(h),
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_channels": int(c),
        "patch_size": int(p),
        "image_size": image_size,
        "rms_norm_eps": RMS_NORM_EPSILON,
    }
    if layout != "release":
        config["is_native"] = native
    return config
