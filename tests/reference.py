"""Independent NumPy reference implementation of AIM, for tests only.

Written from the design notes (El-Nouby et al., "Scalable Pre-training of
Large Autoregressive Image Models", ICML 2024), without importing
`keras_aim`, so that tests can compare the library against a computation it
does not share code with. Everything runs in float64.

It also writes small checkpoints in the released layouts (a hub folder with
`config.json` + `model.safetensors`, or a backbone/head pair of `.pth`
files), so that the conversion code is tested on files shaped like the real
ones.
"""

import json
import math
import os

import numpy as np

LAYER_NORM_EPSILON = 1e-6
BATCH_NORM_EPSILON = 1e-6
TARGET_NORM_EPSILON = 1e-6

_erf = np.vectorize(math.erf, otypes=[np.float64])


# ---------------------------------------------------------------------------
# Random checkpoints in the released layout.
# ---------------------------------------------------------------------------


def random_state_dict(
    embed_dim,
    num_blocks,
    num_heads,
    patch_size,
    num_channels=3,
    num_classes=None,
    seed=0,
    scale=1.0,
):
    """Random AIM state dict with the released key names and torch layouts.

    Weight matrices are drawn from `N(0, (scale / sqrt(fan_in))**2)`, so
    that every pre-activation is of order one: attention is far from
    uniform, GELU runs in its curved region and a wrong epsilon or GELU
    variant changes the outputs by much more than float32 round-off.
    LayerNorm weights are `1 + N(0, 0.1)`, biases `N(0, 0.1)`.

    Args:
        embed_dim: int, the trunk width D.
        num_blocks: int, the number of transformer blocks.
        num_heads: int, the number of attention heads (only checked to
            divide `embed_dim`; the state dict itself does not record it).
        patch_size: int, the patch size p.
        num_channels: int, the image channels C. Defaults to 3.
        num_classes: int or `None`. When given, the attentive-probe head
            tensors (`head.*`) are included. Defaults to `None`.
        seed: int, the random seed. Defaults to 0.
        scale: float, multiplier on the `1 / sqrt(fan_in)` weight scale.
            Defaults to 1.0.

    Returns:
        dict mapping torch key names to NumPy arrays: float32 everywhere
        except `head.bn.num_batches_tracked`, an int64 scalar.

    Example:

    >>> sd = random_state_dict(48, 2, 4, 4, num_classes=5)
    >>> sd["preprocessor.patchifier.proj.weight"].shape
    (48, 3, 4, 4)
    """
    if embed_dim % num_heads:
        raise ValueError(
            f"`num_heads`={num_heads} must divide `embed_dim`={embed_dim}."
        )
    rng = np.random.default_rng(seed)
    d, p, c = embed_dim, patch_size, num_channels

    def dense(out_dim, in_dim, fan_in=None):
        fan_in = in_dim if fan_in is None else fan_in
        std = scale / math.sqrt(fan_in)
        return rng.normal(0.0, std, (out_dim, in_dim))

    def norm(prefix, sd):
        sd[prefix + ".weight"] = 1.0 + rng.normal(0.0, 0.1, (d,))
        sd[prefix + ".bias"] = rng.normal(0.0, 0.1, (d,))

    sd = {}
    sd["preprocessor.patchifier.proj.weight"] = rng.normal(
        0.0, scale / math.sqrt(c * p * p), (d, c, p, p)
    )
    sd["preprocessor.patchifier.proj.bias"] = rng.normal(0.0, 0.1, (d,))
    norm("preprocessor.patchifier.norm", sd)
    for i in range(num_blocks):
        prefix = f"trunk.blocks.{i}."
        norm(prefix + "norm_1", sd)
        sd[prefix + "attn.qkv.weight"] = dense(3 * d, d)
        sd[prefix + "attn.proj.weight"] = dense(d, d)
        norm(prefix + "norm_2", sd)
        sd[prefix + "mlp.fc1.weight"] = dense(4 * d, d)
        sd[prefix + "mlp.fc2.weight"] = dense(d, 4 * d)
    norm("trunk.post_trunk_norm", sd)
    if num_classes is not None:
        sd["head.cls_token"] = rng.normal(0.0, scale, (1, 1, d))
        sd["head.k.weight"] = dense(d, d)
        sd["head.v.weight"] = dense(d, d)
        sd["head.linear.weight"] = dense(num_classes, d)
        sd["head.bn.running_mean"] = rng.normal(0.0, 0.3, (d,))
        sd["head.bn.running_var"] = rng.uniform(0.5, 2.0, (d,))
    sd = {k: np.asarray(v, np.float32) for k, v in sd.items()}
    if num_classes is not None:
        sd["head.bn.num_batches_tracked"] = np.asarray(1000, np.int64)
    return sd


# ---------------------------------------------------------------------------
# Building blocks.
# ---------------------------------------------------------------------------


def gelu(x):
    """Exact GELU, `x * Phi(x)` with the erf form of the normal CDF."""
    x = np.asarray(x, np.float64)
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def gelu_tanh(x):
    """The tanh approximation of GELU (NOT what AIM uses; for sanity)."""
    x = np.asarray(x, np.float64)
    inner = math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)
    return 0.5 * x * (1.0 + np.tanh(inner))


def layer_norm(x, weight, bias, epsilon=LAYER_NORM_EPSILON):
    """LayerNorm over the last axis, biased variance."""
    x = np.asarray(x, np.float64)
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + epsilon) * weight + bias


def softmax(x, axis=-1):
    x = x - x.max(axis=axis, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


def numpy_sincos_2d(grid_height, grid_width, dim):
    """Fixed 2-D sin-cos position embedding, `(gh * gw, dim)`, raster order.

    The first `dim / 2` channels encode the column index and the last
    `dim / 2` the row index; each half is `concat(sin(pos * w),
    cos(pos * w))` with `w_i = 1 / 10000**(i / (dim / 4))`.
    """
    if dim % 4:
        raise ValueError(f"`dim`={dim} must be divisible by 4.")
    quarter = dim // 4
    omega = 1.0 / 10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter)
    rows, cols = np.meshgrid(
        np.arange(grid_height, dtype=np.float64),
        np.arange(grid_width, dtype=np.float64),
        indexing="ij",
    )
    rows, cols = rows.reshape(-1), cols.reshape(-1)

    def half(pos):
        angles = pos[:, None] * omega[None, :]
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    return np.concatenate([half(cols), half(rows)], axis=1)


def numpy_patchify(images, patch_size):
    """Cuts `(B, H, W, C)` images into `(B, N, p * p * C)` patch vectors.

    Patches are in raster order; each is laid out (row in patch, column in
    patch, channel), channel fastest.
    """
    images = np.asarray(images)
    b, h, w, c = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(
            f"Image size {(h, w)} is not divisible by `patch_size`={p}."
        )
    x = images.reshape(b, h // p, p, w // p, p, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def numpy_prefix_causal_mask(prefix_lengths, num_patches):
    """`(B, N, N)` bool mask: `mask[b, i, j] = (j <= i) or (j < K_b)`."""
    k = np.asarray(prefix_lengths).reshape(-1)
    out = np.zeros((k.shape[0], num_patches, num_patches), bool)
    for b in range(k.shape[0]):
        for i in range(num_patches):
            for j in range(num_patches):
                out[b, i, j] = j <= i or j < k[b]
    return out


def _attention(q, k, v, mask=None):
    """Scaled dot-product attention on `(B, H, T, hd)` arrays."""
    scale = q.shape[-1] ** -0.5
    logits = np.einsum("bhtd,bhsd->bhts", q, k) * scale
    if mask is not None:
        logits = np.where(mask[:, None, :, :], logits, -np.inf)
    return np.einsum("bhts,bhsd->bhtd", softmax(logits, -1), v)


def _split_heads(x, num_heads):
    b, n, d = x.shape
    return x.reshape(b, n, num_heads, d // num_heads).transpose(0, 2, 1, 3)


def _merge_heads(x):
    b, h, n, hd = x.shape
    return x.transpose(0, 2, 1, 3).reshape(b, n, h * hd)


def numpy_block(sd, i, x, num_heads, attention_mask=None, gelu_fn=gelu):
    """One pre-norm transformer block `trunk.blocks.{i}` on `(B, N, D)`."""
    f = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    prefix = f"trunk.blocks.{i}."
    d = x.shape[-1]
    h = layer_norm(x, f[prefix + "norm_1.weight"], f[prefix + "norm_1.bias"])
    qkv = h @ f[prefix + "attn.qkv.weight"].T
    q, k, v = (
        _split_heads(qkv[..., j * d : (j + 1) * d], num_heads) for j in range(3)
    )
    attn = _merge_heads(_attention(q, k, v, attention_mask))
    x = x + attn @ f[prefix + "attn.proj.weight"].T
    h = layer_norm(x, f[prefix + "norm_2.weight"], f[prefix + "norm_2.bias"])
    h = gelu_fn(h @ f[prefix + "mlp.fc1.weight"].T)
    return x + h @ f[prefix + "mlp.fc2.weight"].T


def numpy_patch_embed(sd, images):
    """Conv patch embedding + LayerNorm + sin-cos position embedding."""
    f = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    w = f["preprocessor.patchifier.proj.weight"]  # (D, C, p, p)
    d, c, p, _ = w.shape
    images = np.asarray(images, np.float64)
    _, height, width, _ = images.shape
    patches = numpy_patchify(images, p)  # (B, N, p*p*C), (row, col, ch)
    kernel = w.transpose(0, 2, 3, 1).reshape(d, p * p * c)
    x = patches @ kernel.T + f["preprocessor.patchifier.proj.bias"]
    x = layer_norm(
        x,
        f["preprocessor.patchifier.norm.weight"],
        f["preprocessor.patchifier.norm.bias"],
    )
    return x + numpy_sincos_2d(height // p, width // p, d)[None]


def numpy_attentive_probe(sd, features, num_heads):
    """The released attentive-probe head on averaged `(B, N, D)` features."""
    f = {k: np.asarray(v, np.float64) for k, v in sd.items()}
    x = (features - f["head.bn.running_mean"]) / np.sqrt(
        f["head.bn.running_var"] + BATCH_NORM_EPSILON
    )
    b, _, d = x.shape
    q = np.broadcast_to(f["head.cls_token"], (b, 1, d))
    q = _split_heads(np.ascontiguousarray(q), num_heads)
    k = _split_heads(x @ f["head.k.weight"].T, num_heads)
    v = _split_heads(x @ f["head.v.weight"].T, num_heads)
    pooled = _merge_heads(_attention(q, k, v))[:, 0]  # (B, D)
    return pooled @ f["head.linear.weight"].T


def numpy_forward(
    state_dict,
    images_nhwc,
    num_heads,
    probe_layers=None,
    attention_mask=None,
    token_order=None,
    gelu_fn=gelu,
):
    """Runs the AIM trunk (and probe head) in float64 NumPy.

    Args:
        state_dict: dict of torch-layout arrays (see `random_state_dict`).
        images_nhwc: `(B, H, W, C)` array, H and W divisible by the patch.
        num_heads: int, the number of attention heads.
        probe_layers: list of 0-based block indices whose raw outputs are
            averaged for the probe head, or `None`. Logits are returned
            only when this is given and the state dict has `head.*`.
        attention_mask: optional `(B, N, N)` bool mask for the trunk
            attention (`True` = may attend).
        token_order: optional `(N,)` int permutation applied to the tokens
            after the position embedding.
        gelu_fn: the GELU used in the MLPs. Defaults to exact (erf) GELU;
            tests pass `gelu_tanh` to show the tolerance can detect it.

    Returns:
        dict with "tokens" (final-LayerNorm output, `(B, N, D)`), "blocks"
        (list of raw block outputs) and, when computed, "logits".
    """
    f = {k: np.asarray(v, np.float64) for k, v in state_dict.items()}
    num_blocks = len(
        {k.split(".")[2] for k in f if k.startswith("trunk.blocks.")}
    )
    x = numpy_patch_embed(f, images_nhwc)
    if token_order is not None:
        x = x[:, np.asarray(token_order)]
    mask = None if attention_mask is None else np.asarray(attention_mask)
    blocks = []
    for i in range(num_blocks):
        x = numpy_block(f, i, x, num_heads, mask, gelu_fn=gelu_fn)
        blocks.append(x)
    tokens = layer_norm(
        x, f["trunk.post_trunk_norm.weight"], f["trunk.post_trunk_norm.bias"]
    )
    out = {"tokens": tokens, "blocks": blocks}
    if probe_layers is not None and "head.linear.weight" in f:
        feats = np.mean([blocks[i] for i in probe_layers], axis=0)
        out["logits"] = numpy_attentive_probe(f, feats, num_heads)
    return out


def numpy_normalize_targets(patches, epsilon=TARGET_NORM_EPSILON):
    """Per-patch normalisation with the mean and UNBIASED variance."""
    patches = np.asarray(patches, np.float64)
    mean = patches.mean(-1, keepdims=True)
    var = patches.var(-1, ddof=1, keepdims=True)
    return (patches - mean) / np.sqrt(var + epsilon)


def numpy_next_patch_loss(
    images, predictions, prefix_lengths, patch_size, normalize=True
):
    """Next-patch pixel MSE, pooled over non-prefix target patches.

    Row `i` of `predictions` predicts patch `i + 1`. Per-patch MSE is the
    mean over its `p * p * C` values; the loss is the mean over every
    target patch `K_b..N-1` of every sample `b`, as one pool.
    """
    targets = numpy_patchify(np.asarray(images, np.float64), patch_size)
    if normalize:
        targets = numpy_normalize_targets(targets)
    predictions = np.asarray(predictions, np.float64)
    k = np.asarray(prefix_lengths).reshape(-1)
    errors = []
    for b in range(targets.shape[0]):
        for t in range(int(k[b]), targets.shape[1]):
            diff = predictions[b, t - 1] - targets[b, t]
            errors.append(np.mean(diff**2))
    return float(np.mean(errors))


# ---------------------------------------------------------------------------
# Writers for the released checkpoint layouts.
# ---------------------------------------------------------------------------


def hub_config(
    state_dict, num_heads, img_size=224, probe_layers=None, num_classes=None
):
    """A hub `config.json` dict matching `state_dict`'s shapes."""
    d, _, p, _ = state_dict["preprocessor.patchifier.proj.weight"].shape
    num_blocks = len(
        {k.split(".")[2] for k in state_dict if k.startswith("trunk.blocks.")}
    )
    if num_classes is None and "head.linear.weight" in state_dict:
        num_classes = int(state_dict["head.linear.weight"].shape[0])
    return {
        "img_size": img_size,
        "patch_size": int(p),
        "embed_dim": int(d),
        "num_blocks": num_blocks,
        "num_heads": num_heads,
        "probe_layers": (
            probe_layers if probe_layers is not None else min(6, num_blocks)
        ),
        "num_classes": num_classes if num_classes is not None else 1000,
    }


def write_hub_folder(folder, state_dict, config):
    """Writes `config.json` + `model.safetensors` as the hub repos do."""
    from safetensors.numpy import save_file

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    # np.ascontiguousarray would turn a scalar (LiT's temperature) into 1-D.
    tensors = {
        k: np.ascontiguousarray(v) if np.ndim(v) else np.asarray(v)
        for k, v in state_dict.items()
    }
    save_file(tensors, os.path.join(folder, "model.safetensors"))
    return folder


def write_pth_pair(backbone_path, head_path, state_dict):
    """Writes the backbone (`preprocessor.*`, `trunk.*`) and head (`head.*`)
    tensors to two `torch.save` files, as in the `apple/AIM` release.

    `head_path` may be `None` to write only the backbone file.
    """
    import torch

    def to_torch(items):
        return {k: torch.from_numpy(np.array(v)) for k, v in items}

    backbone = to_torch(
        (k, v) for k, v in state_dict.items() if not k.startswith("head.")
    )
    torch.save(backbone, backbone_path)
    if head_path is not None:
        head = to_torch(
            (k, v) for k, v in state_dict.items() if k.startswith("head.")
        )
        torch.save(head, head_path)
    return backbone_path, head_path
