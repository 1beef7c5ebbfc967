"""Visual-Dynamic Injection (paper Sec. 3.1): training-only modules and the training model.

* :class:`VisualContextInjection` (eq. 1-2): a transformer decoder whose query is the probe
  (Q^s by default; Q or a learned vector for the ablations) attends to the frame features X^v;
  L^vc pulls FC(x^qd) towards its output.
* :class:`SpatialDynamicInjection` (eq. 3-5): per-frame heatmaps between the global feature and
  the patch tokens, flattened and projected, then a sequence model (transformer encoder with
  learned positions, mean of outputs; or an LSTM, mean of outputs) gives the video's spatial
  dynamics m~. L^sd matches the pairwise cosine structure of m~ with that of FC(x^qd).
* :class:`VDIModel` wraps the inference :class:`~vdi.model.MomentRetriever` with these modules
  and computes every loss term of eq. 11. Only ``retriever`` is needed at inference: the
  injection modules add no inference cost.

Single-device code: no torch.distributed here.
"""

from __future__ import annotations

import torch
from torch import nn

from vdi.batch import Batch
from vdi.config import Config
from vdi.errors import InputError
from vdi.losses import (
    LossTerms,
    candidate_iou_targets,
    contrastive_injection_loss,
    contrastive_loss,
    iou_loss,
    loss_weights,
    spatial_dynamic_diagnostics,
    spatial_dynamic_loss,
    visual_context_diagnostics,
    visual_context_loss,
)
from vdi.metrics import candidate_grid
from vdi.model import MomentRetriever


class VisualContextInjection(nn.Module):
    """Eq. 1-2: x~^qs = TransDecoder(probe, X^v, X^v); the loss compares FC(x^qd) with it."""

    def __init__(self, dim: int, probe: str, layers: int, heads: int, dropout: float):
        super().__init__()
        if probe not in ("static", "full", "learned"):
            raise ValueError(f"visual-context probe must be static, full or learned, got {probe}")
        self.probe = probe
        layer = nn.TransformerDecoderLayer(dim, heads, 4 * dim, dropout, batch_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        # "L^vc w/o Q" (Table 3): a learned probe replaces the text.
        self.learned_probe = nn.Parameter(torch.randn(dim) * dim**-0.5) if probe == "learned" else None
        self.project_dynamic = nn.Linear(dim, dim)  # FC in eq. 2

    def forward(
        self,
        probe: torch.Tensor | None,
        frames: torch.Tensor,
        frame_valid: torch.Tensor | None,
        dynamic: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """probe [S, D] (None for the learned probe), frames [S, T, D], frame_valid [S, T] bool.

        Returns (FC(x^qd) [S, D], x~^qs [S, D]).
        """
        if probe is None:
            assert self.learned_probe is not None
            probe = self.learned_probe.expand(frames.shape[0], -1)
        padding = None if frame_valid is None else ~frame_valid
        context = self.decoder(probe[:, None, :], frames, memory_key_padding_mask=padding)[:, 0]
        return self.project_dynamic(dynamic), context


class SpatialDynamicInjection(nn.Module):
    """Eq. 3-5: heatmaps M_i, m_i = FC(flatten(M_i)), m~ = SeqModel(m_1..m_T)."""

    def __init__(
        self,
        dim: int,
        num_patches: int,
        num_frames: int,
        sequence_model: str,
        layers: int,
        heads: int,
        dropout: float,
    ):
        super().__init__()
        self.scale = dim**-0.5
        self.project_global = nn.Linear(dim, dim)  # FC(x_i) in eq. 3
        self.project_patches = nn.Linear(dim, dim)  # FC(X~_i) in eq. 3
        self.project_map = nn.Linear(num_patches, dim)  # FC(Flatten(M_i)) in eq. 4
        self.sequence_model = sequence_model
        if sequence_model == "transformer":
            # Frame order is what tells "moves left" from "moves right": learned positions.
            self.positions = nn.Parameter(torch.zeros(num_frames, dim))
            layer = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, batch_first=True)
            self.sequence = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        elif sequence_model == "lstm":
            self.positions = None
            self.sequence = nn.LSTM(dim, dim, num_layers=layers, batch_first=True)
        else:
            raise ValueError(f"sequence model must be transformer or lstm, got {sequence_model}")
        self.project_dynamic = nn.Linear(dim, dim)  # FC(x^qd) in eq. 5

    def video_dynamics(
        self, frames: torch.Tensor, patches: torch.Tensor, frame_valid: torch.Tensor | None
    ) -> torch.Tensor:
        """frames [V, T, D], patches [V, T, P, D], frame_valid [V, T] -> m~ [V, D]."""
        patches = patches.to(frames.dtype)
        heatmaps = torch.einsum("vtd,vtpd->vtp", self.project_global(frames), self.project_patches(patches))
        steps = self.project_map(heatmaps * self.scale)  # eq. 3 (/ sqrt(D)) then eq. 4
        if self.positions is not None:
            padding = None if frame_valid is None else ~frame_valid
            outputs = self.sequence(steps + self.positions[: steps.shape[1]], src_key_padding_mask=padding)
        else:
            outputs, _ = self.sequence(steps)
        if frame_valid is None:
            return outputs.mean(dim=1)
        weights = frame_valid.to(outputs.dtype)[..., None]
        return (outputs * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1)


def moment_frame_mask(moments: torch.Tensor, durations: torch.Tensor, num_frames: int) -> torch.Tensor:
    """[S, T] bool: pre-clips overlapping each moment (at least one per moment)."""
    edges = torch.arange(num_frames + 1, device=moments.device, dtype=torch.float64) / num_frames
    starts = edges[:-1][None] * durations[:, None]
    ends = edges[1:][None] * durations[:, None]
    inside = (ends > moments[:, :1]) & (starts < moments[:, 1:])
    nearest = ((moments[:, 0] / durations) * num_frames).long().clamp(0, num_frames - 1)
    inside[torch.arange(len(moments), device=moments.device), nearest] |= ~inside.any(dim=1)
    return inside


class VDIModel(nn.Module):
    """The training model: retriever + (optional) injection modules -> loss terms of eq. 11."""

    def __init__(self, cfg: Config, retriever: MomentRetriever, num_patches: int | None = None):
        super().__init__()
        self.cfg = cfg
        self.retriever = retriever
        dim = retriever.feature_dim
        injection = cfg.injection
        self.visual_context_on = injection.visual_context != "none" and cfg.loss.lambda_vc > 0
        self.spatial_dynamic_on = injection.spatial_dynamic != "none" and cfg.loss.lambda_sd > 0
        self.visual_context = (
            VisualContextInjection(
                dim,
                injection.visual_context,
                injection.decoder_layers,
                injection.decoder_heads,
                injection.dropout,
            )
            if self.visual_context_on
            else None
        )
        if self.spatial_dynamic_on and not num_patches:
            raise ValueError("L^sd needs the number of patch tokens per frame (num_patches)")
        self.spatial_dynamic = (
            SpatialDynamicInjection(
                dim,
                int(num_patches or 0),
                cfg.model.num_pre_clips,
                injection.spatial_dynamic,
                injection.sequence_layers,
                injection.sequence_heads,
                injection.dropout,
            )
            if self.spatial_dynamic_on
            else None
        )
        self.register_buffer("grid", candidate_grid(retriever.head.mask), persistent=False)

    @property
    def needs_patches(self) -> bool:
        return self.spatial_dynamic_on

    def encode_text(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Q, Q^s and Q^d features in one batched forward of the text tower."""
        needs_static = self.visual_context_on and self.cfg.injection.visual_context == "static"
        needs_dynamic = self.visual_context_on or self.spatial_dynamic_on
        blocks = [batch.query_tokens]
        if needs_static:
            blocks.append(batch.static_tokens)
        if needs_dynamic:
            blocks.append(batch.dynamic_tokens)
        encoder = self.retriever.text_encoder
        if len(blocks) > 1 and self.cfg.model.pack_text:
            features = encoder.forward_blocks(blocks)
        else:
            features = list(encoder(torch.cat(blocks), trim=self.cfg.model.trim_text).split(batch.num_sentences))
        query = features[0]
        static = features[1] if needs_static else None
        dynamic = features[-1] if needs_dynamic else None
        return query, static, dynamic

    def forward(self, batch: Batch, epoch: int = 1, freeze_text: bool = False) -> LossTerms:
        """All loss terms of eq. 11 for a batch. ``freeze_text`` runs the text tower without
        gradient (MMN's first epochs); the injection modules still learn."""
        if freeze_text:
            with torch.no_grad():
                query, static, dynamic = self.encode_text(batch)
        else:
            query, static, dynamic = self.encode_text(batch)
        output = self.retriever.retrieve(batch.video_features, query, batch.sentence_video)
        target_iou = candidate_iou_targets(
            self.grid, self.retriever.head.num_clips, batch.sentence_durations, batch.moments
        )
        loss_cfg = self.cfg.loss
        terms: dict[str, torch.Tensor] = {
            "iou": iou_loss(output.scores.iou, target_iou, loss_cfg.min_iou, loss_cfg.max_iou)
        }
        terms["contrastive_video"], terms["contrastive_sentence"] = contrastive_loss(
            output.maps.contrastive,
            output.sentences.contrastive,
            batch.sentence_video,
            target_iou,
            batch.moments,
            loss_cfg,
        )
        diagnostics: dict[str, torch.Tensor] = {}
        frame_valid = None
        if self.cfg.injection.frames == "moment" and (self.visual_context_on or self.spatial_dynamic_on):
            frame_valid = moment_frame_mask(batch.moments, batch.sentence_durations, batch.video_features.shape[1])
        if self.visual_context is not None:
            assert dynamic is not None
            terms["visual_context"] = self._visual_context_term(batch, query, static, dynamic, frame_valid, diagnostics)
        if self.spatial_dynamic is not None:
            assert dynamic is not None
            terms["spatial_dynamic"] = self._spatial_dynamic_term(batch, dynamic, frame_valid, diagnostics)
        weights = loss_weights(loss_cfg, epoch, self.visual_context_on, self.spatial_dynamic_on)
        return LossTerms(terms, weights, diagnostics)

    def _visual_context_term(
        self,
        batch: Batch,
        query: torch.Tensor,
        static: torch.Tensor | None,
        dynamic: torch.Tensor,
        frame_valid: torch.Tensor | None,
        diagnostics: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """L^vc (eq. 1-2, or its contrastive form); adds its diagnostics to ``diagnostics``."""
        assert self.visual_context is not None
        mode = self.cfg.injection.visual_context
        probe = {"static": static, "full": query, "learned": None}[mode]
        predicted, context = self.visual_context(
            probe, batch.video_features[batch.sentence_video], frame_valid, dynamic
        )
        valid = batch.has_dynamic & (batch.has_static if mode == "static" else True)
        if self.cfg.injection.vc_form == "contrastive":
            loss = contrastive_injection_loss(predicted, context, valid, self.cfg.loss.tau_injection)
        else:
            loss = visual_context_loss(predicted, context, valid)  # eq. 2
        diagnostics |= visual_context_diagnostics(predicted, context, valid)
        return loss

    def _spatial_dynamic_term(
        self,
        batch: Batch,
        dynamic: torch.Tensor,
        frame_valid: torch.Tensor | None,
        diagnostics: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """L^sd (eq. 3-5, or its contrastive form); adds its diagnostics to ``diagnostics``."""
        assert self.spatial_dynamic is not None
        if batch.patch_features is None:
            raise InputError("L^sd is on but the batch has no patch tokens (data.load_patches=false?)")
        moment_frames = frame_valid is not None
        if moment_frames:
            video_dynamics = self.spatial_dynamic.video_dynamics(
                batch.video_features[batch.sentence_video], batch.patch_features[batch.sentence_video], frame_valid
            )
        else:
            # One m~ per video, shared by its sentences (the paper's "spatial dynamic feature of the video").
            video_dynamics = self.spatial_dynamic.video_dynamics(batch.video_features, batch.patch_features, None)[
                batch.sentence_video
            ]
        query_dynamics = self.spatial_dynamic.project_dynamic(dynamic)
        if self.cfg.injection.sd_form == "contrastive":
            same_video = batch.sentence_video[:, None] == batch.sentence_video[None, :]
            loss = contrastive_injection_loss(
                query_dynamics,
                video_dynamics,
                batch.has_dynamic,
                self.cfg.loss.tau_injection,
                None if moment_frames else same_video,  # one m~ per video is shared by its sentences
            )
        else:
            other_videos_only = self.cfg.injection.sd_pairs == "other_videos"
            loss = spatial_dynamic_loss(  # eq. 5
                video_dynamics, query_dynamics, batch.has_dynamic, batch.sentence_video if other_videos_only else None
            )
        diagnostics |= spatial_dynamic_diagnostics(
            video_dynamics, query_dynamics, batch.has_dynamic, batch.sentence_video
        )
        return loss


def text_gradient_norms(model: VDIModel, terms: LossTerms) -> dict[str, torch.Tensor]:
    """Norm of the gradient each weighted loss group (retrieval, L^vc, L^sd) sends into the text
    tower, by extra backward passes that keep the graph and leave ``.grad`` untouched (the
    optimiser step is unchanged); costs about one backward per group, so run it on sampled steps."""
    text = [p for p in model.retriever.text_encoder.parameters() if p.requires_grad]
    groups = {
        "retrieval": ("iou", "contrastive_video", "contrastive_sentence"),
        "visual_context": ("visual_context",),
        "spatial_dynamic": ("spatial_dynamic",),
    }
    norms = {}
    for name, members in groups.items():
        weighted = [
            terms.terms[m] * terms.weights[m] for m in members if terms.weights.get(m, 0.0) and m in terms.terms
        ]
        if not weighted or not text or not any(w.requires_grad for w in weighted):
            continue
        grads = torch.autograd.grad(sum(weighted), text, retain_graph=True, allow_unused=True)
        squares = [g.detach().float().pow(2).sum() for g in grads if g is not None]
        norms[f"grad_text_from_{name}"] = torch.stack(squares).sum().sqrt() if squares else torch.zeros(())
    return norms


def build_vdi_model(cfg: Config, clip_model: nn.Module | None = None) -> VDIModel:
    from vdi.encoders import TextEncoder, create_clip, patch_count

    if clip_model is None:
        clip_model = create_clip(cfg.model.clip.name, cfg.model.clip.pretrained, cfg.model.clip.config_dir)
    text_encoder = TextEncoder(clip_model)
    if cfg.optim.freeze_token_embedding:
        text_encoder.token_embedding.requires_grad_(False)
    retriever = MomentRetriever(cfg.model, text_encoder)
    return VDIModel(cfg, retriever, patch_count(clip_model))


__all__ = [
    "SpatialDynamicInjection",
    "VDIModel",
    "VisualContextInjection",
    "build_vdi_model",
    "moment_frame_mask",
    "text_gradient_norms",
]
