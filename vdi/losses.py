"""Losses: MMN's IoU BCE (eq. 7) and mutual-matching contrastive loss (eq. 8), VDI's visual-context
(eq. 2) and spatial-dynamic (eq. 5) injection losses, and their weighted total (eq. 11).

Pure functions of tensors: no modules, no state. Candidate cells are in the sparse mask's order
([S, C] / [B, J, C]).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from vdi.config import LossConfig
from vdi.errors import InputError
from vdi.metrics import grid_moments, temporal_iou


def candidate_iou_targets(
    grid: torch.Tensor, num_clips: int, durations: torch.Tensor, moments: torch.Tensor
) -> torch.Tensor:
    """IoU between every candidate (seconds) and each sentence's annotated moment: [S, C] float32.

    ``durations`` [S] is the duration of each sentence's video.
    """
    candidates = grid_moments(grid[None].expand(len(durations), -1, -1), durations[:, None], num_clips)
    return temporal_iou(candidates, moments[:, None, :]).float()


def iou_loss(iou_scores: torch.Tensor, target_iou: torch.Tensor, min_iou: float, max_iou: float) -> torch.Tensor:
    """Eq. 7: BCE between sigmoid scores and IoU targets rescaled to [0, 1] by (min_iou, max_iou)."""
    targets = ((target_iou - min_iou) / (max_iou - min_iou)).clamp(0, 1)
    # sigmoid(10 cos) lies in [4.5e-5, 1 - 4.5e-5], so the BCE never sees log(0).
    return F.binary_cross_entropy(iou_scores.float(), targets, reduction="mean")


def contrastive_loss(
    proposal_features: torch.Tensor,
    sentence_features: torch.Tensor,
    sentence_video: torch.Tensor,
    target_iou: torch.Tensor,
    moments: torch.Tensor,
    cfg: LossConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 8, MMN's mutual matching: (video-anchored loss, sentence-anchored loss).

    * The positive proposal of a sentence is its highest-IoU candidate; the positive pair's
      cosine has the margin subtracted (also where it appears in the denominator).
    * Video-anchored (p^m): the positive proposal against all sentences of the batch, except
      sentences of the same video whose annotated moment has IoU >= sentence_removal_iou with this
      sentence's moment (they describe the same moment).
    * Sentence-anchored (p^q): the sentence against its positive, the same video's proposals
      with target IoU < negative_video_iou, and every proposal of the other videos.

    One deliberate difference from MMN's code: there, same-video proposals that are not
    negatives are zeroed (cos = 0) but stay in the denominator, each adding exp(0) = 1; here they
    are left out, as the paper's negative set X^{q-} says.
    """
    features = F.normalize(proposal_features.float(), dim=1)  # [B, J, C]
    sentences = F.normalize(sentence_features.float(), dim=1)  # [S, J]
    num_sentences = sentences.shape[0]
    positive_index = target_iou.argmax(dim=1)  # [S]
    positive_features = features[sentence_video, :, positive_index]  # [S, J]
    positive = (positive_features * sentences).sum(dim=1) - cfg.margin  # [S]

    # Video-anchored: proposal_s vs every sentence t.
    same_video = sentence_video[:, None] == sentence_video[None, :]
    moment_overlap = temporal_iou(moments[:, None, :], moments[None, :, :])
    sentence_negative = ~same_video | (moment_overlap < cfg.sentence_removal_iou)
    diagonal = torch.eye(num_sentences, dtype=torch.bool, device=sentences.device)
    video_logits = torch.where(diagonal, positive[:, None], positive_features @ sentences.T)  # [S, S]
    allowed = sentence_negative | diagonal
    video_logits = (video_logits / cfg.tau_video).masked_fill(~allowed, float("-inf"))
    loss_video = -(positive / cfg.tau_video - torch.logsumexp(video_logits, dim=1)).mean()

    # Sentence-anchored: sentence_s vs every proposal of every video.
    all_logits = torch.einsum("sj,bjc->sbc", sentences, features)  # [S, B, C]
    own = F.one_hot(sentence_video, num_classes=features.shape[0]).bool()[:, :, None]  # [S, B, 1]
    proposal_negative = ~own | (target_iou < cfg.negative_video_iou)[:, None, :]
    proposal_logits = (all_logits / cfg.tau_sentence).masked_fill(~proposal_negative, float("-inf"))
    denominator = torch.cat([positive[:, None] / cfg.tau_sentence, proposal_logits.flatten(1)], dim=1)
    loss_sentence = -(positive / cfg.tau_sentence - torch.logsumexp(denominator, dim=1)).mean()
    return loss_video, loss_sentence


def masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over valid entries; exactly 0 (never NaN) when none is valid."""
    valid = valid.to(values.dtype)
    return (values * valid).sum() / valid.sum().clamp(min=1)


def visual_context_loss(predicted: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Eq. 2: ||FC(x^qd) - x~^qs||^2 per sample, averaged over valid samples.

    The squared distance is divided by D (i.e. a mean over feature dimensions) so that
    lambda_vc keeps one meaning across CLIP sizes; with D fixed this is eq. 2 up to a constant.
    Samples with an empty Q^d (or an empty Q^s when Q^s is the probe) are masked out.
    """
    per_sample = (predicted.float() - target.float()).pow(2).mean(dim=1)
    return masked_mean(per_sample, valid)


def spatial_dynamic_loss(
    video_dynamics: torch.Tensor,
    query_dynamics: torch.Tensor,
    valid: torch.Tensor,
    sentence_video: torch.Tensor | None = None,
) -> torch.Tensor:
    """Eq. 5 averaged over ordered pairs as in eq. 11: mean of (eps^v_ij - eps^q_ij)^2.

    ``video_dynamics`` [S, D] is m~ of each sample's video (or moment), ``query_dynamics`` [S, D]
    is FC(x^qd). Pairs where either sample has an empty Q^d are left out. With
    ``sentence_video`` [S] only pairs of sentences of *different* videos count: eq. 5 relates
    "the spatial dynamic features of different videos (V and V')" (sec. 3.1); with one m~ per
    video, a same-video pair has eps^v = 1 and would pull together the Q^d of different actions
    of that video. Without it every pair counts (the diagonal included).
    """
    video = F.normalize(video_dynamics.float(), dim=1)
    query = F.normalize(query_dynamics.float(), dim=1)
    epsilon_video = video @ video.T
    epsilon_query = query @ query.T
    pair_valid = valid[:, None] & valid[None, :]
    if sentence_video is not None:
        pair_valid = pair_valid & (sentence_video[:, None] != sentence_video[None, :])
    return masked_mean((epsilon_video - epsilon_query).pow(2), pair_valid)


def contrastive_injection_loss(
    query: torch.Tensor,
    target: torch.Tensor,
    valid: torch.Tensor,
    tau: float,
    same_target: torch.Tensor | None = None,
) -> torch.Tensor:
    """The contrastive form of an injection loss (this toolkit's variant, not the paper's): each
    valid sentence's FC(x^qd) [S, D] must pick its own video-side target [S, D] (x~ for L^vc, m~
    for L^sd) among the batch's valid targets by cosine / ``tau`` (InfoNCE). Unlike eq. 2 and 5 it
    cannot be solved by a constant target: a collapsed target makes every candidate equal and
    the loss log(N). ``same_target`` [S, S] marks candidates that are the positive's own target
    under another name (sentences of one video share m~); they are left out as negatives."""
    rows = valid.nonzero().flatten()
    if rows.numel() < 2:
        return query.sum() * 0.0  # nothing to contrast; keeps the graph
    q = F.normalize(query[rows].float(), dim=1)
    k = F.normalize(target[rows].float(), dim=1)
    logits = q @ k.T / tau
    if same_target is not None:
        duplicate = same_target[rows][:, rows] & ~torch.eye(rows.numel(), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(duplicate, float("-inf"))
    return F.cross_entropy(logits, torch.arange(rows.numel(), device=logits.device))


@torch.no_grad()
def feature_spread(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean per-dimension standard deviation across the valid rows of [S, D] (0 with < 2 rows):
    how much a target still varies across samples; near 0, it carries no per-sample signal."""
    rows = values.float()[valid]
    if rows.shape[0] < 2:
        return torch.zeros((), device=values.device)
    return rows.std(dim=0).mean()


@torch.no_grad()
def visual_context_diagnostics(
    predicted: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Spread of L^vc's target x~ (the decoder output) and of its prediction, and the loss over
    the target's variance (1 = no better than predicting the batch mean; a near-zero loss with
    a near-zero spread is a collapsed target, not an injection)."""
    rows_target, rows_predicted = target.float()[valid], predicted.float()[valid]
    variance = rows_target.var(dim=0).mean() if rows_target.shape[0] > 1 else torch.zeros((), device=target.device)
    loss = (rows_predicted - rows_target).pow(2).mean() if rows_target.shape[0] else torch.zeros_like(variance)
    return {
        "vc_target_spread": feature_spread(target, valid),
        "vc_prediction_spread": feature_spread(predicted, valid),
        "vc_unexplained": loss / variance.clamp(min=1e-12),
    }


@torch.no_grad()
def spatial_dynamic_diagnostics(
    video_dynamics: torch.Tensor, query_dynamics: torch.Tensor, valid: torch.Tensor, sentence_video: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Spread of L^sd's target m~ and the cosines eps^v between samples of *different* videos
    (mean and std): all near 1 with std near 0 means m~ no longer tells videos apart."""
    video = F.normalize(video_dynamics.float(), dim=1)
    epsilon = video @ video.T
    pairs = valid[:, None] & valid[None, :] & (sentence_video[:, None] != sentence_video[None, :])
    cosines = epsilon[pairs]
    zero = torch.zeros((), device=video.device)
    return {
        "sd_target_spread": feature_spread(video_dynamics, valid),
        "sd_query_spread": feature_spread(query_dynamics, valid),
        "sd_target_cross_video_cos": cosines.mean() if cosines.numel() else zero,
        "sd_target_cross_video_cos_std": cosines.std() if cosines.numel() > 1 else zero,
    }


@dataclass
class LossTerms:
    """Unweighted terms, the weights used and the weighted total (eq. 11); ``diagnostics`` holds
    detached measurements of the injection targets (``*_diagnostics``) and, on sampled steps,
    the gradient norm each term sends into the text tower."""

    terms: dict[str, torch.Tensor]
    weights: dict[str, float]
    diagnostics: dict[str, torch.Tensor] = field(default_factory=dict)
    total: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        total = None
        for name, value in self.terms.items():
            weight = self.weights.get(name, 0.0)
            if weight == 0.0:
                continue
            total = value * weight if total is None else total + value * weight
        if total is None:
            raise InputError("every loss term is switched off: give at least one loss a non-zero weight")
        self.total = total

    def detached(self) -> dict[str, float]:
        values = {name: float(value.detach()) for name, value in self.terms.items()}
        values["total"] = float(self.total.detach())
        return values

    def diagnostic_values(self) -> dict[str, float]:
        return {name: float(value) for name, value in self.diagnostics.items()}


def loss_weights(cfg: LossConfig, epoch: int, visual_context_on: bool, spatial_dynamic_on: bool) -> dict[str, float]:
    """Weights of eq. 11 for an epoch (1-based). MMN keeps the full contrastive weight for
    ``contrastive_full_epochs`` epochs, then scales it by ``contrastive_decay``."""
    contrastive = cfg.lambda_cl
    if epoch > cfg.contrastive_full_epochs:
        contrastive *= cfg.contrastive_decay
    weights = {"iou": cfg.lambda_iou, "contrastive_video": contrastive, "contrastive_sentence": contrastive}
    if visual_context_on:
        weights["visual_context"] = cfg.lambda_vc
    if spatial_dynamic_on:
        weights["spatial_dynamic"] = cfg.lambda_sd
    return weights


__all__ = [
    "LossTerms",
    "candidate_iou_targets",
    "contrastive_injection_loss",
    "contrastive_loss",
    "iou_loss",
    "loss_weights",
    "masked_mean",
    "spatial_dynamic_loss",
    "visual_context_loss",
]
