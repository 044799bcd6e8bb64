"""A video ViT with VideoMAE's architecture that takes any (T, H, W) multiple of its tubelet and patch.

Tubelet patch embedding, pre-norm blocks with VideoMAE's q and v biases, attention through
`scaled_dot_product_attention` (fused kernels on GPUs), mean pooling, a final norm and a linear head. The
fixed sinusoid position table belongs to the native token grid (`frames`, `crop`); another grid gets that
table laid out in 3-D and interpolated, so the native shape sees exactly the checkpoint's embeddings
(`pos_embed="per_grid"` instead gives each grid VideoMAE's table for its own token count).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mgvideo.models.heads import HEAD_ACTIVATIONS

POS_EMBEDS = ("interpolate", "per_grid")


def sinusoid_table(tokens: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed position table (1, tokens, dim): sin on even channels, cos on odd ones."""
    position = torch.arange(tokens, dtype=torch.float64)[:, None]
    rates = torch.pow(10000.0, 2 * (torch.arange(dim) // 2) / dim).to(torch.float64)
    angles = position / rates
    table = torch.empty(tokens, dim, dtype=torch.float64)
    table[:, 0::2], table[:, 1::2] = torch.sin(angles[:, 0::2]), torch.cos(angles[:, 1::2])
    return table.float()[None]


class DropPath(nn.Module):
    """Stochastic depth: drop a residual branch per sample, scaling survivors by 1 / keep."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep


class Attention(nn.Module):
    """Multi-head self-attention with one qkv weight and (as VideoMAE) learnt q and v biases, no k bias."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True, attn_dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {heads}")
        self.heads, self.attn_dropout = heads, attn_dropout
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        dropout = self.attn_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)), each with drop path."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, qkv_bias: bool, drop_path: float,
                 attn_dropout: float, norm_eps: float) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, heads, qkv_bias, attn_dropout)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(dim, hidden))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("fc2", nn.Linear(hidden, dim))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VideoViT(nn.Module):
    """VideoMAE's ViT for clips (B, C, T, H, W) with T a multiple of `tubelet_size` and H, W of `patch_size`.

    `frames` and `crop` fix the native token grid of the position table (the checkpoint's shape).
    `drop_path` is the last block's rate (linearly increasing from 0, as VideoMAE), `dropout` the head's.
    As the zoo's CNN heads, it returns logits, in eval mode too unless built with `head_act` softmax or
    sigmoid (probabilities). `pos_embed` says what a grid other than the native one gets: "interpolate"
    (the native table resized in 3-D, so a token keeps its place in the clip) or "per_grid" (VideoMAE's
    1-D table made for that grid's token count, as a model built at that shape would have).
    `remove_static` (not VideoMAE's; the CPU preset's, as c3d_tiny's) subtracts each clip's mean frame
    first, so the model sees what moves.
    """

    def __init__(self, num_classes: int, frames: int = 16, crop: int = 224, tubelet_size: int = 2,
                 patch_size: int = 16, in_channels: int = 3, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop_path: float = 0.0,
                 dropout: float = 0.0, attn_dropout: float = 0.0, mean_pooling: bool = True,
                 norm_eps: float = 1e-6, head_norm_eps: float = 1e-6, head_init_scale: float = 1.0,
                 head_act: str = "none", remove_static: bool = False, pos_embed: str = "interpolate") -> None:
        super().__init__()
        if head_act not in HEAD_ACTIVATIONS:
            raise ValueError(f"head activation must be one of {HEAD_ACTIVATIONS}, got {head_act!r}")
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed must be one of {POS_EMBEDS}, got {pos_embed!r}")
        self.head_act, self.remove_static, self.pos_embed_rule = head_act, remove_static, pos_embed
        self._grid_tables: dict[tuple[int, int, int], torch.Tensor] = {}
        if frames % tubelet_size or crop % patch_size:
            raise ValueError(f"native shape {frames}x{crop} is not a multiple of tubelet {tubelet_size} "
                             f"and patch {patch_size}")
        self.tubelet_size, self.patch_size = tubelet_size, patch_size
        self.shape_multiple = (tubelet_size, patch_size)  # whole tubelets and patches (zoo.shape_multiple)
        self.grid = (frames // tubelet_size, crop // patch_size, crop // patch_size)
        kernel = (tubelet_size, patch_size, patch_size)
        self.patch_embed = nn.Sequential()
        self.patch_embed.add_module("proj", nn.Conv3d(in_channels, embed_dim, kernel, stride=kernel))
        self.register_buffer("pos_embed", sinusoid_table(math.prod(self.grid), embed_dim), persistent=False)
        rates = [drop_path * i / max(depth - 1, 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, r, attn_dropout, norm_eps) for r in rates
        )
        self.mean_pooling = mean_pooling
        self.norm = nn.Identity() if mean_pooling else nn.LayerNorm(embed_dim, eps=norm_eps)
        self.fc_norm = nn.LayerNorm(embed_dim, eps=head_norm_eps) if mean_pooling else nn.Identity()
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, num_classes)
        self.apply(_init_weights)
        with torch.no_grad():  # VideoMAE's fine-tuning starts the head small
            self.head.weight.mul_(head_init_scale)

    @property
    def num_layers(self) -> int:
        """Transformer blocks (for layer-wise LR decay)."""
        return len(self.blocks)

    def layer_id(self, name: str) -> int:
        """Depth of a parameter for layer-wise LR decay: 0 the embedding, i + 1 block i, last the head."""
        if name.startswith("patch_embed"):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.num_layers + 1

    def position_embedding(self, grid: tuple[int, int, int]) -> torch.Tensor:
        """The (1, tokens, dim) table for a token grid: the native one; for another grid, it trilinearly
        resized in 3-D ("interpolate") or the grid's own sinusoid table ("per_grid", made once per grid)."""
        grid = tuple(grid)
        if grid == self.grid:
            return self.pos_embed
        dim = self.pos_embed.shape[-1]
        if self.pos_embed_rule == "per_grid":
            table = self._grid_tables.get(grid)
            if table is None or table.device != self.pos_embed.device:
                table = sinusoid_table(math.prod(grid), dim).to(self.pos_embed.device)
                self._grid_tables[grid] = table
            return table
        table = self.pos_embed.reshape(1, *self.grid, dim).permute(0, 4, 1, 2, 3)
        table = F.interpolate(table, size=tuple(grid), mode="trilinear", align_corners=False)
        return table.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t, h, w = x.shape[-3:]
        if t % self.tubelet_size or h % self.patch_size or w % self.patch_size:
            raise ValueError(f"clip {t}x{h}x{w} is not a multiple of tubelet {self.tubelet_size} (frames) "
                             f"and patch {self.patch_size} (height, width)")
        if self.remove_static:
            x = x - x.mean(dim=2, keepdim=True)
        x = self.patch_embed(x)
        grid = tuple(x.shape[2:])
        x = x.flatten(2).transpose(1, 2)
        x = x + self.position_embedding(grid).to(x.dtype)
        for block in self.blocks:
            x = block(x)
        x = self.norm(x)
        x = self.fc_norm(x.mean(1)) if self.mean_pooling else x[:, 0]
        x = self.head(self.dropout(x))
        if self.training or self.head_act == "none":
            return x
        return x.softmax(-1) if self.head_act == "softmax" else x.sigmoid()


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
