"""A plain PyTorch AIM, written for the benchmarks: the peer to beat.

The same shapes and operations as keras_aim's models: a strided-conv patch
embedding with bias and LayerNorm, a fixed 2-D sin-cos position embedding,
pre-norm blocks without biases (`F.scaled_dot_product_attention`, exact
GELU), a final LayerNorm (eps 1e-6 everywhere); for pre-training, the
pixel head (linear in, sin-cos at head width, residual MLP blocks, LN,
linear out) and the normalised next-patch loss over non-prefix patches
with one prefix length per image. Nothing here is imported by keras_aim.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

EPS = 1e-6


def sincos_2d(height, width, dim):
    """`(height * width, dim)` sin-cos table, rows then columns."""
    quarter = dim // 4
    omega = 1.0 / 10000.0 ** (torch.arange(quarter) / quarter)

    def encode(positions):
        angles = positions[:, None] * omega[None, :]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)

    rows = torch.arange(height, dtype=torch.float32).repeat_interleave(width)
    cols = torch.arange(width, dtype=torch.float32).repeat(height)
    return torch.cat([encode(cols), encode(rows)], dim=-1)


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio=4.0):
        super().__init__()
        self.heads = heads
        hidden = int(dim * mlp_ratio)
        self.norm_1 = nn.LayerNorm(dim, eps=EPS)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.norm_2 = nn.LayerNorm(dim, eps=EPS)
        self.fc1 = nn.Linear(dim, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x, mask=None):
        b, n, d = x.shape
        qkv = self.qkv(self.norm_1(x)).reshape(b, n, 3, self.heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        x = x + self.proj(attended.transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm_2(x))))


class Trunk(nn.Module):
    def __init__(self, image_size, patch, dim, depth, heads, channels=3):
        super().__init__()
        grid = image_size // patch
        self.embed = nn.Conv2d(channels, dim, patch, stride=patch)
        self.embed_norm = nn.LayerNorm(dim, eps=EPS)
        self.register_buffer("position", sincos_2d(grid, grid, dim)[None])
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=EPS)

    def forward(self, images, mask=None):  # images: (B, C, H, W)
        x = self.embed(images).flatten(2).transpose(1, 2)
        x = self.embed_norm(x) + self.position.to(x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


class PixelHead(nn.Module):
    def __init__(self, grid, dim, width, depth, out):
        super().__init__()
        self.proj = nn.Linear(dim, width)
        self.register_buffer("position", sincos_2d(grid, grid, width)[None])
        self.norms = nn.ModuleList(
            nn.LayerNorm(width, eps=EPS) for _ in range(depth)
        )
        self.fc1 = nn.ModuleList(
            nn.Linear(width, 4 * width, bias=False) for _ in range(depth)
        )
        self.fc2 = nn.ModuleList(
            nn.Linear(4 * width, width, bias=False) for _ in range(depth)
        )
        self.norm = nn.LayerNorm(width, eps=EPS)
        self.out = nn.Linear(width, out)

    def forward(self, tokens):
        x = self.proj(tokens) + self.position.to(tokens.dtype)
        for norm, fc1, fc2 in zip(self.norms, self.fc1, self.fc2):
            x = x + fc2(F.gelu(fc1(norm(x))))
        return self.out(self.norm(x))


class Pretrainer(nn.Module):
    """Trunk + pixel head; `loss(images, prefix)` is AIM's objective."""

    def __init__(self, image_size, patch, dim, depth, heads, width, head_depth):
        super().__init__()
        grid = image_size // patch
        self.patch = patch
        self.trunk = Trunk(image_size, patch, dim, depth, heads)
        self.head = PixelHead(grid, dim, width, head_depth, patch * patch * 3)

    def loss(self, images, prefix):
        b, c, h, w = images.shape
        n = (h // self.patch) * (w // self.patch)
        i = torch.arange(n)
        # Token i sees j when j <= i or j < K (the prefix).
        mask = (i[None, :] <= i[:, None])[None] | (
            i[None, None, :] < prefix[:, None, None]
        )
        predictions = self.head(self.trunk(images, mask[:, None]))
        p = self.patch
        patches = images.unfold(2, p, p).unfold(3, p, p)  # B C gh gw p p
        patches = patches.permute(0, 2, 3, 4, 5, 1).reshape(b, n, -1)
        mean = patches.mean(-1, keepdim=True)
        var = patches.var(-1, keepdim=True, unbiased=True)
        targets = (patches - mean) / torch.sqrt(var + EPS)
        error = (
            (predictions[:, :-1].float() - targets[:, 1:].float()) ** 2
        ).mean(-1)
        weight = (i[None, 1:] >= prefix[:, None]).float()
        return (error * weight).sum() / weight.sum().clamp(min=1.0)


def trunk_forward_flops(
    image_size, patch, dim, depth, channels=3, mlp_ratio=4.0
):
    """Multiply-adds x 2 of one image's trunk forward pass."""
    tokens = (image_size // patch) ** 2
    embed = 2 * tokens * patch * patch * channels * dim
    block = 2 * tokens * (4 * dim * dim + 2 * mlp_ratio * dim * dim)
    block += 4 * tokens * tokens * dim
    return float(embed + depth * block)


def random_prefix(batch, tokens, generator=None):
    """One prefix length per image, uniform in [1, N-1]."""
    return torch.randint(1, tokens, (batch,), generator=generator)


def parameter_count(module):
    return sum(math.prod(p.shape) for p in module.parameters())
