"""Independent float64 NumPy reference of the AIMv2 LiT model, for tests.

Beside `tests/reference_aimv2.py` (the image trunk, reused here). Written
from the release's description (Fini et al., 2024; apple/ml-aim
`aim-v2/aim/v2/torch/models.py` `AIMv2LiT`, `layers.py`): the image
trunk's tokens pooled by one learned query (bias-free key and value, a
linear layer with bias), a causal text tower (token table plus position
table, RMSNorm blocks with SwiGLU, a final RMSNorm, the token at the first
end-of-text id), bias-free projections, and logits `exp(clip(s, 0,
log 100))` times the cosine similarity. It imports nothing of keras_aim.

It also writes tiny LiT checkpoints in both key layouts, and a tiny CLIP
BPE vocabulary (`vocab.json` + `merges.txt`) with an independent
tokenizer for it (CLIP's split pattern, byte-level BPE with `</w>`).
"""

import json
import math
import os
import unicodedata

import numpy as np

from tests.reference import _attention
from tests.reference import _merge_heads
from tests.reference import _split_heads
from tests.reference_aimv2 import numpy_forward_v2
from tests.reference_aimv2 import random_state_dict_v2
from tests.reference_aimv2 import rms_norm
from tests.reference_aimv2 import silu
from tests.reference_aimv2 import to_transformers_layout

START, END = "<|startoftext|>", "<|endoftext|>"
IMAGE = dict(hidden_dim=48, num_layers=2, intermediate_dim=128, patch_size=4)
TEXT = dict(hidden_dim=32, num_layers=2, intermediate_dim=64, length=16)
HEADS = 2
PROJECTION = 24
WORDS = ("a", "photo", "of", "the", "cat", "dog", "car", "small", "big")

# --- A tiny CLIP vocabulary and an independent tokenizer --------------------


def byte_characters():
    """GPT-2's printable stand-in for each of the 256 byte values."""
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


def tiny_vocabulary(words=WORDS):
    """`(vocab, merges)` in CLIP's layout: every byte character alone and
    with `</w>`, the merges that spell `words` (and a few that compete
    with them), then the two special tokens."""
    chars = byte_characters()
    vocab = chars + [c + "</w>" for c in chars]
    merges = [("o", "t"), ("a", "l"), ("c", "a")]
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            merges.append((parts[0], parts[1]))
            parts = [parts[0] + parts[1]] + parts[2:]
    unique = list(dict.fromkeys(merges))
    for left, right in unique:
        if left + right not in vocab:
            vocab.append(left + right)
    vocab += [START, END]
    return {token: i for i, token in enumerate(vocab)}, unique


def write_tokenizer_files(folder, words=WORDS):
    """Writes `vocab.json` and `merges.txt`; returns `(vocab, merges)`."""
    vocab, merges = tiny_vocabulary(words)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n")
        f.writelines(f"{a} {b}\n" for a, b in merges)
    return vocab, merges


def _pieces(text):
    """CLIP's split: contractions, letter runs, single digits, other runs."""
    kind = {c: unicodedata.category(c)[0] for c in set(text) if not c.isspace()}
    pieces, i = [], 0
    while i < len(text):
        c = text[i]
        short = next(
            (
                s
                for s in ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")
                if text.startswith(s, i)
            ),
            None,
        )
        if short:
            j = i + len(short)
        elif c.isspace():
            i += 1
            continue
        elif kind[c] == "L":
            j = i + 1
            while j < len(text) and kind.get(text[j]) == "L":
                j += 1
        elif kind[c] == "N":
            j = i + 1
        else:
            j = i + 1
            while j < len(text) and kind.get(text[j], "L") not in "LN":
                j += 1
        pieces.append(text[i:j])
        i = j
    return pieces


def reference_tokenize(text, vocab, merges, length):
    """Token ids as CLIP's fast tokenizer gives them, padded with 0."""
    text = " ".join(unicodedata.normalize("NFC", text).split()).lower()
    chars = byte_characters()
    rank = {pair: r for r, pair in enumerate(merges)}
    ids = [vocab[START]]
    for piece in _pieces(text):
        word = [chars[b] for b in piece.encode("utf-8")]
        word[-1] += "</w>"
        while len(word) > 1:
            pairs = [(rank.get(p, math.inf), p) for p in zip(word, word[1:])]
            best, pair = min(pairs)
            if best == math.inf:
                break
            merged, k = [], 0
            while k < len(word):
                if k + 1 < len(word) and (word[k], word[k + 1]) == pair:
                    merged.append(word[k] + word[k + 1])
                    k += 2
                else:
                    merged.append(word[k])
                    k += 1
            word = merged
        ids.extend(vocab[t] for t in word)
    ids = ids[: length - 1] + [vocab[END]]
    return ids + [0] * (length - len(ids))


# --- Tiny LiT checkpoints -----------------------------------------------------


def random_lit_state_dict(vocabulary_size, seed=0):
    """A tiny LiT checkpoint in the release's layout (torch shapes)."""
    rng = np.random.default_rng(seed)

    def normal(*shape, scale=0.2):
        return rng.normal(0.0, scale, size=shape).astype(np.float32)

    d, t, h = IMAGE["hidden_dim"], TEXT["hidden_dim"], TEXT["intermediate_dim"]
    image = random_state_dict_v2(
        hidden_dim=d,
        num_layers=IMAGE["num_layers"],
        intermediate_dim=IMAGE["intermediate_dim"],
        patch_size=IMAGE["patch_size"],
        seed=seed + 1,
    )
    sd = {"image_encoder." + k: v for k, v in image.items()}
    head = "image_encoder.head."
    sd[head + "cls_token"] = normal(1, 1, d, scale=1.0)
    sd[head + "k.weight"] = normal(d, d, scale=d**-0.5)
    sd[head + "v.weight"] = normal(d, d, scale=d**-0.5)
    sd[head + "linear.weight"] = normal(d, d, scale=d**-0.5)
    sd[head + "linear.bias"] = normal(d)
    text = "text_encoder."
    sd[text + "preprocessor.text_embedding.weight"] = normal(vocabulary_size, t)
    sd[text + "preprocessor.positional_embedding"] = normal(TEXT["length"], t)
    for i in range(TEXT["num_layers"]):
        b = f"{text}trunk.blocks.{i}."
        sd[b + "norm_1.weight"] = 1.0 + normal(t)
        sd[b + "attn.qkv.weight"] = normal(3 * t, t, scale=t**-0.5)
        sd[b + "attn.proj.weight"] = normal(t, t, scale=t**-0.5)
        sd[b + "norm_2.weight"] = 1.0 + normal(t)
        sd[b + "mlp.fc1.weight"] = normal(h, t, scale=t**-0.5)
        sd[b + "mlp.fc3.weight"] = normal(h, t, scale=t**-0.5)
        sd[b + "mlp.fc2.weight"] = normal(t, h, scale=h**-0.5)
    sd[text + "trunk.post_trunk_norm.weight"] = 1.0 + normal(t)
    sd["image_projector.weight"] = normal(PROJECTION, d, scale=d**-0.5)
    sd["text_projector.weight"] = normal(PROJECTION, t, scale=t**-0.5)
    sd["log_logit_scale"] = np.float32(math.log(1 / 0.07) - 0.3).reshape(())
    return sd


def _under(sd, prefix):
    return {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)}


def to_transformers_lit(sd):
    """The same LiT tensors under transformers' `Aimv2Model` keys."""
    out = {}
    image = _under(sd, "image_encoder.")
    trunk = {k: v for k, v in image.items() if not k.startswith("head.")}
    for key, value in to_transformers_layout(trunk).items():
        out["vision_model." + key] = value
    for old, new in (("cls_token", "cls_token"), ("k.weight", "k_proj.weight")):
        out["vision_model.head." + new] = image["head." + old]
    out["vision_model.head.v_proj.weight"] = image["head.v.weight"]
    out["vision_model.head.output_proj.weight"] = image["head.linear.weight"]
    out["vision_model.head.output_proj.bias"] = image["head.linear.bias"]
    text = _under(sd, "text_encoder.")
    embeddings = "text_model.embeddings."
    out[embeddings + "token_embedding.weight"] = text[
        "preprocessor.text_embedding.weight"
    ]
    out[embeddings + "position_embedding.weight"] = text[
        "preprocessor.positional_embedding"
    ]
    trunk = {k: v for k, v in text.items() if k.startswith("trunk.")}
    for key, value in to_transformers_layout(trunk).items():
        out["text_model." + key] = value
    out["visual_projection.weight"] = sd["image_projector.weight"]
    out["text_projection.weight"] = sd["text_projector.weight"]
    out["logit_scale"] = sd["log_logit_scale"]
    return out


def lit_hub_config(sd, eos_token_id, layout="release"):
    """A LiT hub `config.json` (transformers' `Aimv2Config` shape)."""
    vision = {
        "hidden_size": IMAGE["hidden_dim"],
        "intermediate_size": IMAGE["intermediate_dim"],
        "num_hidden_layers": IMAGE["num_layers"],
        "num_attention_heads": HEADS,
        "num_channels": 3,
        "patch_size": IMAGE["patch_size"],
        "image_size": 28,
        "rms_norm_eps": 1e-5,
    }
    text = {
        "vocab_size": int(
            sd["text_encoder.preprocessor.text_embedding.weight"].shape[0]
        ),
        "hidden_size": TEXT["hidden_dim"],
        "intermediate_size": TEXT["intermediate_dim"],
        "num_hidden_layers": TEXT["num_layers"],
        "num_attention_heads": HEADS,
        "max_position_embeddings": TEXT["length"],
        "eos_token_id": eos_token_id,
        "rms_norm_eps": 1e-5,
    }
    return {
        "model_type": "aimv2",
        "architectures": ["Aimv2Model" if layout != "release" else "AIMv2LiT"],
        "vision_config": vision,
        "text_config": text,
        "projection_dim": PROJECTION,
        "max_logit_scale": 100.0,
    }


# --- The forward pass -------------------------------------------------------


def numpy_image_embeddings(sd, images):
    """Image tower: trunk, attention pooling, projection `(B, P)`."""
    image = _under(sd, "image_encoder.")
    trunk = {k: v for k, v in image.items() if not k.startswith("head.")}
    tokens = numpy_forward_v2(trunk, images, HEADS)
    f = {k: np.asarray(v, np.float64) for k, v in image.items()}
    query = np.broadcast_to(
        f["head.cls_token"], (len(tokens), 1, tokens.shape[-1])
    )
    pooled = _attention(
        _split_heads(query, HEADS),
        _split_heads(tokens @ f["head.k.weight"].T, HEADS),
        _split_heads(tokens @ f["head.v.weight"].T, HEADS),
    )
    pooled = _merge_heads(pooled)[:, 0]
    pooled = pooled @ f["head.linear.weight"].T + f["head.linear.bias"]
    return pooled @ np.asarray(sd["image_projector.weight"], np.float64).T


def numpy_text_embeddings(sd, token_ids, eos_token_id, causal=True):
    """Text tower: causal blocks, the first end-of-text token, projection
    (`causal=False`: the mistake of a bidirectional text tower)."""
    f = {
        k: np.asarray(v, np.float64)
        for k, v in _under(sd, "text_encoder.").items()
    }
    ids = np.asarray(token_ids)
    b, n = ids.shape
    x = f["preprocessor.text_embedding.weight"][ids]
    x = x + f["preprocessor.positional_embedding"][:n]
    mask = np.tril(np.ones((n, n), bool)) if causal else np.ones((n, n), bool)
    mask = np.broadcast_to(mask, (b, n, n))
    i = 0
    while f"trunk.blocks.{i}.norm_1.weight" in f:
        w = {
            k.split(".", 3)[3]: v
            for k, v in f.items()
            if k.startswith(f"trunk.blocks.{i}.")
        }
        h = rms_norm(x, w["norm_1.weight"])
        q, k, v = np.split(h @ w["attn.qkv.weight"].T, 3, axis=-1)
        heads = [_split_heads(a, HEADS) for a in (q, k, v)]
        x = x + _merge_heads(_attention(*heads, mask=mask)) @ (
            w["attn.proj.weight"].T
        )
        h = rms_norm(x, w["norm_2.weight"])
        hidden = silu(h @ w["mlp.fc1.weight"].T) * (h @ w["mlp.fc3.weight"].T)
        x = x + hidden @ w["mlp.fc2.weight"].T
        i += 1
    x = rms_norm(x, f["trunk.post_trunk_norm.weight"])
    first = np.argmax(ids == eos_token_id, axis=1)  # 0 where there is none
    pooled = x[np.arange(b), first]
    return pooled @ np.asarray(sd["text_projector.weight"], np.float64).T


def normalize(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def numpy_logits(sd, images, token_ids, eos_token_id):
    """`(logits_per_image, image embeddings, text embeddings)`."""
    image = numpy_image_embeddings(sd, images)
    text = numpy_text_embeddings(sd, token_ids, eos_token_id)
    log_scale = float(np.asarray(sd["log_logit_scale"], np.float64))
    scale = math.exp(min(max(log_scale, 0.0), math.log(100.0)))
    return scale * normalize(image) @ normalize(text).T, image, text
