"""The moment-retrieval model: CLIP text tower + MMN's 2D temporal map head (paper eq. 6-10).

Single-device code: nothing here touches torch.distributed, DeepSpeed, MLflow or Ray. This module
is all inference needs; the training-only injection modules live in ``vdi/injection.py`` and are
neither built nor run by :class:`MomentRetriever`.

Shapes: B videos, S sentences (each belongs to one video via ``sentence_video`` [S]), T pre-clips,
N clips, D CLIP feature size, J joint-space size.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vdi.config import ModelConfig
from vdi.encoders import TextEncoder
from vdi.metrics import candidate_grid, sparse_mask

# MMN scales the cosine by 10 before the sigmoid so the IoU head can reach 0 and 1.
IOU_LOGIT_SCALE = 10.0


class SparseMaxPool(nn.Module):
    """MMN's sparse 2D map: cell (i, j) holds the max-pool of clips i..j (eq. 6's x^m_{i,j})."""

    def __init__(self, num_clips: int, pooling_counts: list[int]):
        super().__init__()
        self.num_clips = num_clips
        mask = sparse_mask(num_clips, pooling_counts)
        self.register_buffer("mask", mask, persistent=False)
        # Each pooling step fills one diagonal of the mask: kernel 2 / stride 1 within a stride
        # level, kernel 3 / stride 2 when the level doubles (MMN's SparseMaxPool).
        self.kernels: list[tuple[int, int]] = []
        self.diagonals: list[tuple[torch.Tensor, torch.Tensor]] = []
        stride, offset, length = 1, 0, num_clips
        for count in pooling_counts:
            for step in range(count):
                kernel, pool_stride = (3, 2) if (stride > 1 and step == 0) else (2, 1)
                length = (length - kernel) // pool_stride + 1
                offset += stride
                starts = torch.arange(0, num_clips - offset, stride)
                if len(starts) != length:
                    raise ValueError(f"pooling counts {pooling_counts} do not tile a {num_clips}-clip map")
                self.kernels.append((kernel, pool_stride))
                self.diagonals.append((starts, starts + offset))
            stride *= 2

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        """[B, D, N] -> [B, D, N, N] (zeros outside the mask)."""
        batch, dim, count = clips.shape
        map2d = clips.new_zeros(batch, dim, count, count)
        diagonal = torch.arange(count, device=clips.device)
        map2d[:, :, diagonal, diagonal] = clips
        x = clips
        for (kernel, stride), (rows, cols) in zip(self.kernels, self.diagonals):
            x = F.max_pool1d(x, kernel, stride)
            map2d[:, :, rows, cols] = x
        return map2d


class ProposalConv(nn.Module):
    """MMN's conv stack over the 2D map, reweighted by how many valid cells each kernel saw."""

    def __init__(self, input_size: int, hidden_size: int, kernel_size: int, num_layers: int, joint_size: int):
        super().__init__()
        first_padding = (kernel_size - 1) * num_layers // 2
        self.convs = nn.ModuleList(
            [nn.Conv2d(input_size, hidden_size, kernel_size, padding=first_padding)]
            + [nn.Conv2d(hidden_size, hidden_size, kernel_size) for _ in range(num_layers - 1)]
        )
        self.norms = nn.ModuleList([nn.BatchNorm2d(hidden_size) for _ in range(num_layers)])
        self.to_contrastive = nn.Conv2d(hidden_size, joint_size, 1)  # Conv1D in eq. 8
        self.to_iou = nn.Conv2d(hidden_size, joint_size, 1)  # Conv1D in eq. 6

    @staticmethod
    def layer_weights(mask: torch.Tensor, convs: nn.ModuleList) -> list[torch.Tensor]:
        """Per-layer [N, N] weights 1 / (#valid cells under the kernel), 0 where none."""
        weights = []
        current = mask[None, None].float()
        for conv in convs:
            ones = torch.ones(1, 1, *conv.kernel_size, device=mask.device)
            counts = torch.round(F.conv2d(current, ones, stride=conv.stride, padding=conv.padding))
            weight = torch.where(counts > 0, 1.0 / counts.clamp(min=1), torch.zeros_like(counts))
            weights.append(weight[0, 0])
            current = (weight > 0).float()
        return weights

    def forward(self, map2d: torch.Tensor, weights: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = map2d
        for conv, norm, weight in zip(self.convs, self.norms, weights):
            x = norm(conv(x)).relu() * weight
        return self.to_contrastive(x), self.to_iou(x)


@dataclass
class VideoMaps:
    """Proposal features of the candidate cells (mask order): [B, J, C] each."""

    contrastive: torch.Tensor
    iou: torch.Tensor


@dataclass
class SentenceEmbeddings:
    contrastive: torch.Tensor  # [S, J]
    iou: torch.Tensor  # [S, J]

    def select(self, rows: torch.Tensor) -> SentenceEmbeddings:
        """The embeddings of sentences ``rows`` [S'] (e.g. another video's sentences for a derangement)."""
        return SentenceEmbeddings(self.contrastive[rows], self.iou[rows])


@dataclass
class ScoreMaps:
    """Per-sentence scores of its own video's candidate cells (mask order), [S, C] each."""

    iou: torch.Tensor  # sigmoid(10 cos) in the IoU space (eq. 6)
    contrastive: torch.Tensor  # cosine in the contrastive space (eq. 9)

    def fused(self, power: float = 0.5) -> torch.Tensor:
        """MMN's test-time score ((cos * 0.5 + 0.5) ** power) * iou (eq. 10's Hadamard fusion)."""
        return (self.contrastive * 0.5 + 0.5).clamp(min=0) ** power * self.iou


class MMNHead(nn.Module):
    """Video side of MMN (pooling, sparse 2D map, conv stack) and the sentence projections."""

    def __init__(self, cfg: ModelConfig, feature_dim: int):
        super().__init__()
        self.num_clips = cfg.num_clips
        # VDI removes MMN's linear layer in the pooling module to keep CLIP's feature space.
        self.pool_kernel = cfg.num_pre_clips // cfg.num_clips
        self.clip_conv = None
        if cfg.clip_conv_kernel:
            kernel = cfg.clip_conv_kernel
            self.clip_conv = nn.Conv1d(feature_dim, feature_dim, kernel, padding=kernel // 2)
            # zero-initialised residual: training starts from the paper's head (CLIP features as they are)
            nn.init.zeros_(self.clip_conv.weight)
            nn.init.zeros_(self.clip_conv.bias)
        self.map2d = SparseMaxPool(cfg.num_clips, list(cfg.pooling_counts))
        self.proposal_conv = ProposalConv(
            feature_dim, cfg.hidden_size, cfg.kernel_size, cfg.num_conv_layers, cfg.joint_size
        )
        weights = ProposalConv.layer_weights(self.map2d.mask, self.proposal_conv.convs)
        for index, weight in enumerate(weights):
            self.register_buffer(f"layer_weight_{index}", weight, persistent=False)
        self.sentence_iou = nn.Linear(feature_dim, cfg.joint_size)  # FC in eq. 6
        self.sentence_contrastive = nn.Linear(feature_dim, cfg.joint_size)  # FC in eq. 8

    @property
    def mask(self) -> torch.Tensor:
        return self.map2d.mask

    def _layer_weights(self) -> list[torch.Tensor]:
        return [getattr(self, f"layer_weight_{index}") for index in range(len(self.proposal_conv.convs))]

    def clips(self, video_features: torch.Tensor) -> torch.Tensor:
        """[B, T, D] pre-clip features -> [B, D, N] clip features, the 2D map's input."""
        clips = F.avg_pool1d(video_features.transpose(1, 2), self.pool_kernel, self.pool_kernel)
        if self.clip_conv is not None:
            clips = clips + self.clip_conv(clips)  # each clip sees its neighbours: the order of a change
        return clips

    def video_maps(self, video_features: torch.Tensor) -> VideoMaps:
        """[B, T, D] pre-clip features -> contrastive and IoU proposal features [B, J, C]."""
        contrastive, iou = self.proposal_conv(self.map2d(self.clips(video_features)), self._layer_weights())
        return VideoMaps(contrastive[:, :, self.mask], iou[:, :, self.mask])

    def sentence_embeddings(self, sentence_features: torch.Tensor) -> SentenceEmbeddings:
        return SentenceEmbeddings(self.sentence_contrastive(sentence_features), self.sentence_iou(sentence_features))

    @staticmethod
    def own_video_cosine(maps: torch.Tensor, sentences: torch.Tensor, sentence_video: torch.Tensor) -> torch.Tensor:
        """cos(sentence s, every candidate of its video) -> [S, C], one small matmul per video."""
        maps = F.normalize(maps, dim=1)
        sentences = F.normalize(sentences, dim=1)
        cosine = sentences.new_empty(sentences.shape[0], maps.shape[2])
        for video in range(maps.shape[0]):
            rows = (sentence_video == video).nonzero().flatten()
            if len(rows):
                cosine[rows] = sentences[rows] @ maps[video]
        return cosine

    def score_maps(self, maps: VideoMaps, sentences: SentenceEmbeddings, sentence_video: torch.Tensor) -> ScoreMaps:
        iou_cos = self.own_video_cosine(maps.iou, sentences.iou, sentence_video)
        contrastive_cos = self.own_video_cosine(maps.contrastive, sentences.contrastive, sentence_video)
        return ScoreMaps(iou=torch.sigmoid(iou_cos * IOU_LOGIT_SCALE), contrastive=contrastive_cos)


@dataclass
class RetrievalOutput:
    maps: VideoMaps
    sentences: SentenceEmbeddings
    scores: ScoreMaps


class MomentRetriever(nn.Module):
    """Inference model: text tower + MMN head. The same module is trained inside VDIModel."""

    def __init__(self, cfg: ModelConfig, text_encoder: TextEncoder):
        super().__init__()
        self.text_encoder = text_encoder
        self.head = MMNHead(cfg, text_encoder.output_dim)
        self.trim_text = cfg.trim_text

    @property
    def feature_dim(self) -> int:
        return self.text_encoder.output_dim

    @property
    def candidates(self) -> torch.Tensor:
        """Candidate cells [C, 2] (start clip, end clip) in mask order: the columns of :meth:`score`."""
        return candidate_grid(self.head.mask)

    def encode_queries(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text_encoder(tokens, trim=self.trim_text)

    # -- the scoring path of evaluation and the Predictor (fused scores, eq. 10) ---------------
    def video_maps(self, video_features: torch.Tensor) -> VideoMaps:
        """[B, T, D] pre-clip features -> proposal maps, computed once per video for all its queries."""
        return self.head.video_maps(video_features.float())

    def embed_queries(self, tokens: torch.Tensor) -> SentenceEmbeddings:
        """[S, context] tokens -> sentence embeddings in fp32 (the text tower may run in bf16)."""
        return self.head.sentence_embeddings(self.encode_queries(tokens).float())

    def score(
        self, maps: VideoMaps, sentences: SentenceEmbeddings, sentence_video: torch.Tensor, power: float
    ) -> torch.Tensor:
        """Test-time scores [S, C] (fp32) of each sentence against its own video's candidates: MMN's
        fusion of the IoU and contrastive scores (eq. 10, :meth:`ScoreMaps.fused`) with ``power``
        (``eval.contrastive_power``)."""
        return self.head.score_maps(maps, sentences, sentence_video).fused(power).float()

    def retrieve(
        self, video_features: torch.Tensor, sentence_features: torch.Tensor, sentence_video: torch.Tensor
    ) -> RetrievalOutput:
        maps = self.head.video_maps(video_features)
        sentences = self.head.sentence_embeddings(sentence_features)
        return RetrievalOutput(maps, sentences, self.head.score_maps(maps, sentences, sentence_video))

    def forward(
        self, video_features: torch.Tensor, query_tokens: torch.Tensor, sentence_video: torch.Tensor
    ) -> ScoreMaps:
        return self.retrieve(video_features, self.encode_queries(query_tokens), sentence_video).scores


__all__ = [
    "IOU_LOGIT_SCALE",
    "MMNHead",
    "MomentRetriever",
    "ProposalConv",
    "RetrievalOutput",
    "ScoreMaps",
    "SentenceEmbeddings",
    "SparseMaxPool",
    "VideoMaps",
]
