"""CLIP encoders from open_clip: a frozen visual tower and a trainable, length-trimmed text tower.

* :func:`create_clip` builds an open_clip model by name, with a pretrained tag, a local checkpoint
  path or random weights, and turns every failure into a one-line :class:`ModelMissing`.
* :class:`FrozenVisualEncoder` returns per-frame global features [T, D] and *projected* patch tokens
  [T, P, D] (ViT: tokens after ln_post times the visual projection; ModifiedResNet: the attention
  pool's value and output projections applied to every spatial position).
* :class:`TextEncoder` runs CLIP's text transformer on the batch's longest token length instead of
  the padded context of 77. With CLIP's causal mask a token only attends to earlier tokens, so the
  end-of-text feature that CLIP pools does not depend on the padding after it: trimming gives the
  same result at a fraction of the cost (tests check equality with the padded computation).
  It can also pack two short texts (Q^s and Q^d of one sentence) into one row with a
  block-diagonal causal mask and positions restarting per block: again the same features.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vdi.config import looks_like_path
from vdi.errors import UserError

CLIP_CONFIG_DIR = Path(__file__).parent / "clip_configs"


class ModelMissing(UserError, RuntimeError):
    """A CLIP model or checkpoint that cannot be found or downloaded."""


def register_model_configs(extra_dir: str | os.PathLike | None = None) -> None:
    """Make the package's (and an optional user folder's) JSON architectures known to open_clip."""
    import open_clip

    open_clip.add_model_config(str(CLIP_CONFIG_DIR))
    if extra_dir:
        folder = Path(extra_dir)
        if not folder.is_dir():
            raise ModelMissing(f"CLIP config folder {folder} does not exist (model.clip.config_dir)")
        open_clip.add_model_config(str(folder))


def create_clip(name: str, pretrained: str | None, config_dir: str | None = None) -> nn.Module:
    """An open_clip CLIP model on the CPU in eval mode.

    ``pretrained``: a tag (e.g. ``openai``; downloaded once into the cache), an absolute path to a
    local checkpoint, or ``None`` for random weights.
    """
    import open_clip

    register_model_configs(config_dir)
    if name not in open_clip.list_models():
        raise ModelMissing(
            f"unknown CLIP model '{name}'; use an open_clip name (e.g. ViT-B-32) or add its JSON config "
            "folder with model.clip.config_dir"
        )
    if pretrained is None:
        # open_clip warns that no weights were loaded; here that is the intent (random weights, or
        # weights loaded right after from a vdi checkpoint)
        logging.disable(logging.WARNING)
        try:
            model = open_clip.create_model(name, pretrained=None)
        finally:
            logging.disable(logging.NOTSET)
    elif looks_like_path(pretrained):
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise ModelMissing(f"CLIP checkpoint {path} not found (model.clip.pretrained); check the path")
        try:
            model = open_clip.create_model(name, pretrained=str(path))
        except RuntimeError as error:
            first = str(error).splitlines()[0][:200]
            raise ModelMissing(f"CLIP checkpoint {path} does not fit model '{name}': {first}") from error
    else:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained not in tags:
            raise ModelMissing(
                f"no pretrained tag '{pretrained}' for CLIP model '{name}' (tags: {', '.join(tags) or 'none'}); "
                "or set model.clip.pretrained=/abs/path/to/checkpoint.pt"
            )
        try:
            model = open_clip.create_model(name, pretrained=pretrained)
        except Exception as error:  # open_clip raises RuntimeError after the hub's retries
            raise ModelMissing(
                f"could not load CLIP weights '{name}/{pretrained}' (no network or not cached); download them "
                "once on a machine with network, or set model.clip.pretrained=/abs/path/to/checkpoint.pt"
            ) from error
    model.eval()
    return model


@dataclass
class TokenBatch:
    tokens: torch.Tensor  # [B, context] long, 0-padded
    lengths: torch.Tensor  # [B] tokens incl. start and end of text
    truncated: int  # how many texts were cut at the context length


class Tokenizer:
    """open_clip's tokenizer for a model name, counting the texts it truncates."""

    def __init__(self, clip_name: str, config_dir: str | None = None):
        import open_clip

        register_model_configs(config_dir)
        self._tokenizer = open_clip.get_tokenizer(clip_name)
        self.context_length = int(getattr(self._tokenizer, "context_length", 77))

    def __call__(self, texts: list[str]) -> TokenBatch:
        if not texts:
            return TokenBatch(torch.zeros(0, self.context_length, dtype=torch.long), torch.zeros(0), 0)
        tokens = self._tokenizer(list(texts))
        lengths = (tokens != 0).sum(dim=1)
        truncated = 0
        full = (lengths == self.context_length).nonzero().flatten().tolist()
        encode = getattr(self._tokenizer, "encode", None)
        for index in full:
            # a full row is truncated unless the text is exactly context - 2 BPE tokens long
            if encode is None or len(encode(texts[index])) + 2 > self.context_length:
                truncated += 1
        return TokenBatch(tokens, lengths, truncated)


def preprocess_frames(frames: torch.Tensor, size: int, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 frames [T, H, W, 3] of one video -> normalised float [T, 3, S, S]: the short side
    resized to S (bicubic, antialiased), then a centre crop, as CLIP's own preprocessing."""
    images = frames.permute(0, 3, 1, 2).float().div_(255)
    height, width = images.shape[-2:]
    scale = size / min(height, width)
    if scale != 1:
        new_size = (max(size, round(height * scale)), max(size, round(width * scale)))
        images = F.interpolate(images, size=new_size, mode="bicubic", align_corners=False, antialias=True)
    top = (images.shape[-2] - size) // 2
    left = (images.shape[-1] - size) // 2
    images = images[..., top : top + size, left : left + size].clamp_(0, 1)
    return (images - mean.to(images.device)) / std.to(images.device)


class FrozenVisualEncoder(nn.Module):
    """Frozen CLIP image tower: images -> (global [B, D], projected patch tokens [B, P, D])."""

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        self.visual = clip_model.visual
        self.visual.requires_grad_(False)
        self.visual.eval()
        self.is_vit = hasattr(self.visual, "conv1") and hasattr(self.visual, "class_embedding")
        self.is_resnet = hasattr(self.visual, "attnpool")
        if not (self.is_vit or self.is_resnet):
            raise ModelMissing(f"visual tower {type(self.visual).__name__} is not supported (ViT or ModifiedResNet)")
        size = self.visual.image_size
        self.image_size = int(size[0] if isinstance(size, tuple | list) else size)
        preprocess = getattr(self.visual, "preprocess_cfg", {}) or {}
        mean = preprocess.get("mean", (0.48145466, 0.4578275, 0.40821073))
        std = preprocess.get("std", (0.26862954, 0.26130258, 0.27577711))
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> FrozenVisualEncoder:
        # The tower stays in eval mode: BatchNorm statistics of a frozen ResNet must not move.
        return super().train(False)

    @property
    def output_dim(self) -> int:
        return int(self.visual.output_dim)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 frames [T, H, W, 3] -> normalised float [T, 3, S, S] (resize short side, centre crop)."""
        return preprocess_frames(frames, self.image_size, self.mean, self.std)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        visual = self.visual
        if self.is_vit:
            previous = visual.output_tokens
            visual.output_tokens = True
            try:
                pooled, tokens = visual(images)
            finally:
                visual.output_tokens = previous
            patches = tokens @ visual.proj if visual.proj is not None else tokens
            return pooled, patches
        features = visual.layer4(visual.layer3(visual.layer2(visual.layer1(visual.stem(images)))))
        pooled = visual.attnpool(features)
        attnpool = visual.attnpool
        spatial = features.flatten(2).transpose(1, 2)  # [B, HW, C]
        positional = attnpool.positional_embedding[1:].to(spatial.dtype)
        # MaskCLIP-style dense features: what each position contributes through value + output proj.
        patches = attnpool.c_proj(attnpool.v_proj(spatial + positional))
        return pooled, patches


class TextEncoder(nn.Module):
    """CLIP's text tower (token embedding, causal transformer, final LN, projection), trainable."""

    def __init__(self, clip_model: nn.Module):
        super().__init__()
        if not hasattr(clip_model, "token_embedding"):
            raise ModelMissing(
                f"{type(clip_model).__name__} has no CLIP text transformer (custom text towers are unsupported)"
            )
        self.token_embedding = clip_model.token_embedding
        self.positional_embedding = clip_model.positional_embedding
        self.transformer = clip_model.transformer
        self.ln_final = clip_model.ln_final
        self.text_projection = clip_model.text_projection
        self.pool_type = clip_model.text_pool_type
        self.eos_id = getattr(clip_model, "text_eos_id", None)
        self.heads = self.transformer.resblocks[0].attn.num_heads
        mask = clip_model.attn_mask
        self.causal = mask is not None
        self.register_buffer(
            "causal_mask",
            mask if mask is not None else torch.zeros(self.context_length, self.context_length),
            persistent=False,
        )

    @property
    def context_length(self) -> int:
        return int(self.positional_embedding.shape[0])

    @property
    def output_dim(self) -> int:
        projection = self.text_projection
        if projection is None:
            return int(self.ln_final.normalized_shape[0])
        if isinstance(projection, nn.Linear):
            return int(projection.out_features)
        return int(projection.shape[1])

    @property
    def can_trim(self) -> bool:
        # Trimming (and packing) is exact only when later tokens cannot influence the pooled one.
        return self.causal and self.pool_type in ("argmax", "eos")

    def _pool_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.pool_type == "eos" and self.eos_id is not None:
            return (tokens == self.eos_id).int().argmax(dim=-1)
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        if self.pool_type == "first":
            return torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
        return torch.full((tokens.shape[0],), tokens.shape[1] - 1, dtype=torch.long, device=tokens.device)

    def _project(self, pooled: torch.Tensor) -> torch.Tensor:
        projection = self.text_projection
        if projection is None:
            return pooled
        if isinstance(projection, nn.Linear):
            return projection(pooled)
        return pooled @ projection

    def _run(self, tokens: torch.Tensor, positions: torch.Tensor | None, mask: torch.Tensor) -> torch.Tensor:
        cast_dtype = self.transformer.get_cast_dtype()
        if positions is None:
            position_embedding = self.positional_embedding[: tokens.shape[1]]
        else:
            # a one-hot product, not positional_embedding[positions]: the backward of advanced
            # indexing accumulates repeated positions in a thread-dependent order on the CPU, which
            # made seeded runs differ; the matmul's reduction order is fixed
            one_hot = F.one_hot(positions, self.positional_embedding.shape[0]).to(self.positional_embedding.dtype)
            position_embedding = one_hot @ self.positional_embedding
        x = self.token_embedding(tokens).to(cast_dtype) + position_embedding.to(cast_dtype)
        x = self.transformer(x, attn_mask=mask)
        return self.ln_final(x)

    def forward(self, tokens: torch.Tensor, trim: bool = True) -> torch.Tensor:
        """Features [B, D] of 0-padded token rows [B, context]."""
        if tokens.shape[0] == 0:
            return self.positional_embedding.new_zeros(0, self.output_dim)
        pool_at = self._pool_positions(tokens)
        if trim and self.can_trim:
            length = int(pool_at.max()) + 1
            tokens = tokens[:, :length]
        length = tokens.shape[1]
        mask = self.causal_mask[:length, :length] if self.causal else None
        x = self._run(tokens, None, mask)
        pooled = x[torch.arange(x.shape[0], device=x.device), pool_at]
        return self._project(pooled)

    def forward_blocks(self, blocks: list[torch.Tensor]) -> list[torch.Tensor]:
        """Features of K token sets [B, context] each, packed into B rows: one text forward.

        Row b holds ``blocks[0][b]``, ``blocks[1][b]``, ... one after another (each from start to
        end of text). A token attends causally within its own block only and positions restart at
        0 in each block, so every feature equals the one :meth:`forward` computes for that text
        alone, while the padding of short texts (Q^s, Q^d) is not computed.
        """
        count = blocks[0].shape[0]
        if not self.can_trim or len(blocks) == 1:
            features = self.forward(torch.cat(blocks), trim=True)
            return list(features.split(count))
        if count == 0:
            return [self.positional_embedding.new_zeros(0, self.output_dim) for _ in blocks]
        device = blocks[0].device
        lengths = torch.stack([self._pool_positions(block) + 1 for block in blocks])  # [K, B]
        ends = lengths.cumsum(dim=0)  # [K, B] exclusive end column of each block
        starts = ends - lengths
        width = int(ends[-1].max())
        columns = torch.arange(width, device=device)[None, :].expand(count, -1)  # [B, W]
        tokens = torch.zeros(count, width, dtype=blocks[0].dtype, device=device)
        positions = torch.zeros(count, width, dtype=torch.long, device=device)
        block_of = torch.full((count, width), len(blocks), dtype=torch.long, device=device)  # K = padding
        for index, block in enumerate(blocks):
            inside = (columns >= starts[index][:, None]) & (columns < ends[index][:, None])
            local = (columns - starts[index][:, None]).clamp(min=0, max=block.shape[1] - 1)
            tokens = torch.where(inside, block.gather(1, local), tokens)
            positions = torch.where(inside, local, positions)
            block_of = torch.where(inside, torch.full_like(block_of, index), block_of)
        same_block = block_of[:, :, None] == block_of[:, None, :]
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        allowed = same_block & causal[None]
        additive = torch.zeros(count, width, width, device=device, dtype=self.positional_embedding.dtype)
        additive = additive.masked_fill(~allowed, float("-inf")).repeat_interleave(self.heads, dim=0)
        x = self._run(tokens, positions, additive)
        rows = torch.arange(count, device=device)
        return [self._project(x[rows, ends[index] - 1]) for index in range(len(blocks))]


def patch_count(clip_model: nn.Module) -> int:
    """Patch tokens per frame of an open_clip visual tower (ViT grid or ResNet final map)."""
    visual = clip_model.visual
    grid = getattr(visual, "grid_size", None)
    if grid is not None:
        return int(grid[0] * grid[1])
    size = visual.image_size
    side = int(size[0] if isinstance(size, tuple | list) else size) // 32
    return side * side


__all__ = [
    "CLIP_CONFIG_DIR",
    "FrozenVisualEncoder",
    "ModelMissing",
    "TextEncoder",
    "TokenBatch",
    "Tokenizer",
    "create_clip",
    "patch_count",
    "register_model_configs",
]
