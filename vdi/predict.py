"""Inference: from a video and sentences to ranked moments. Imports no training code.

    from vdi.predict import Predictor
    predictor = Predictor.from_checkpoint("runs/synthetic/best/model.pt")
    video = predictor.encode_video("clip.mp4")            # decode + encode once (cacheable)
    moments = predictor.predict(video, ["the red circle moves to the left", "a blue star spins"])
    # -> per query: [Moment(start=3.5, end=6.0, score=0.81), ...] after NMS, best first

    python -m vdi.predict --checkpoint runs/synthetic/best/model.pt clip.mp4 "the red circle moves left"

The injection modules are never built: a checkpoint holds only the retriever (text tower + MMN
head). A video is encoded once: its frame features *and* its 2D proposal maps are kept, so each
further query costs one text forward and a few small matrix products.

**Long videos.** A video longer than ``window`` seconds (default: the longest training video,
stored in the checkpoint) is cut into windows of that length with 50% overlap (the last window
ends at the video's end). Every window is resampled to the model's pre-clip count like a
training video; candidates of all windows are mapped to absolute seconds, pooled, and re-ranked
with greedy NMS (IoU > the model's NMS threshold suppresses).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vdi.batch import prepare_video_features
from vdi.checkpoint import load_retriever
from vdi.cli import run_cli
from vdi.config import Config
from vdi.encoders import FrozenVisualEncoder, ModelMissing, Tokenizer, create_clip
from vdi.errors import InputError, read_utf8
from vdi.metrics import grid_moments, rank_segments
from vdi.model import MomentRetriever, VideoMaps
from vdi.text import QueryError, normalize_queries, normalize_query


@dataclass(frozen=True)
class Moment:
    start: float
    end: float
    score: float


@dataclass
class EncodedVideo:
    """A video ready for queries: per-frame features and the proposal maps of each window."""

    features: torch.Tensor  # [F, D] per-frame global features
    duration: float
    fps: float
    windows: list[tuple[float, float]]  # (start s, end s) of each window
    maps: list[VideoMaps]  # one per window, [1, J, C]


class Predictor:
    """``precision``: fp32 (default; the same rankings as evaluation) or bf16 for the text tower
    (2-3x faster on CPUs with AVX-512 and on GPUs; the MMN head stays fp32; see the benchmark for
    how often the top-1 moment changes)."""

    def __init__(
        self, retriever: MomentRetriever, cfg: Config, metadata: dict, device: str = "cpu", precision: str = "fp32"
    ):
        if precision not in ("fp32", "bf16"):
            raise InputError(f"precision {precision!r}: use fp32 or bf16")
        from vdi.checkpoint import usable_device

        usable_device(device)
        self.retriever = retriever.to(device).eval()
        if precision == "bf16":
            self.retriever.text_encoder.to(torch.bfloat16)  # the text tower dominates a query's cost
        self.precision = precision
        self.cfg = cfg
        self.device = torch.device(device)
        self.fps = float(metadata.get("feature_fps") or 4.0)
        self.window = float(metadata.get("max_train_duration") or 0) or None
        self.trained_clip_weights: str | None = metadata.get("clip_weights")
        self.tokenizer = Tokenizer(cfg.model.clip.name, cfg.model.clip.config_dir)
        self._visual: FrozenVisualEncoder | None = None
        self.grid = self.retriever.candidates

    @classmethod
    def from_checkpoint(
        cls, path: str | Path, device: str = "cpu", clip_pretrained: str | None = None, precision: str = "fp32"
    ) -> Predictor:
        """Load ``runs/<name>/best/model.pt`` (weights_only). ``clip_pretrained`` overrides where the
        frozen visual tower's weights come from (default: the training config's)."""
        retriever, cfg, payload = load_retriever(path, device)
        if clip_pretrained is not None:
            cfg.model.clip.pretrained = clip_pretrained
        return cls(retriever, cfg, payload.get("metadata", {}), device, precision)

    # -- video side ----------------------------------------------------------------------------
    @property
    def visual(self) -> FrozenVisualEncoder:
        if self._visual is None:  # built only when raw videos are encoded
            from vdi.data.format import weights_identity

            clip_cfg = self.cfg.model.clip
            try:
                clip = create_clip(clip_cfg.name, clip_cfg.pretrained, clip_cfg.config_dir)
            except ModelMissing as error:
                raise ModelMissing(
                    f"{error}; point the predictor at the visual tower's weights with --clip-pretrained PATH "
                    "(Predictor.from_checkpoint(..., clip_pretrained=PATH))"
                ) from error
            weights = weights_identity(clip_cfg.pretrained)
            if self.trained_clip_weights and weights != self.trained_clip_weights:
                raise ModelMissing(
                    f"visual tower weights {clip_cfg.pretrained} ({weights[:19]}...) are not the ones this model was "
                    f"trained on ({self.trained_clip_weights[:19]}...); pass the training CLIP with --clip-pretrained"
                )
            self._visual = FrozenVisualEncoder(clip).to(self.device)
        return self._visual

    @torch.no_grad()
    def encode_frames(self, frames: np.ndarray, batch_frames: int = 256) -> torch.Tensor:
        parts = []
        for chunk in torch.from_numpy(frames).split(batch_frames):
            pooled, _ = self.visual(self.visual.preprocess(chunk.to(self.device)))
            parts.append(pooled.float().cpu())
        return torch.cat(parts)

    def encode_video(
        self, video: str | Path | np.ndarray | torch.Tensor, duration: float | None = None
    ) -> EncodedVideo:
        """A video file, or per-frame features [F, D] sampled at the checkpoint's fps."""
        if isinstance(video, str | Path):
            from vdi.video import decode_video

            decoded = decode_video(video, self.fps, self.visual.image_size)
            features = self.encode_frames(decoded.frames)
            duration = decoded.duration
        else:
            features = torch.as_tensor(np.asarray(video) if not isinstance(video, torch.Tensor) else video).float()
            if features.dim() != 2 or features.shape[0] == 0:
                raise InputError(f"features must be [frames, dim] with at least one frame, got {list(features.shape)}")
            duration = duration if duration is not None else features.shape[0] / self.fps
        if features.shape[1] != self.retriever.feature_dim:
            raise InputError(f"features have size {features.shape[1]}, the model expects {self.retriever.feature_dim}")
        windows = self.window_bounds(float(duration))
        maps = []
        with torch.no_grad():
            for start, end in windows:
                first = int(np.floor(start * self.fps))
                last = max(first + 1, int(np.ceil(end * self.fps)))
                clip = prepare_video_features(features[first:last], self.cfg.model.num_pre_clips)
                maps.append(self.retriever.video_maps(clip[None].to(self.device)))
        return EncodedVideo(features, float(duration), self.fps, windows, maps)

    def window_bounds(self, duration: float) -> list[tuple[float, float]]:
        if self.window is None or duration <= self.window * 1.05:
            return [(0.0, duration)]
        stride = self.window / 2
        starts = list(np.arange(0.0, max(duration - self.window, 0.0) + 1e-9, stride))
        if starts[-1] + self.window < duration:
            starts.append(duration - self.window)
        return [(float(s), float(min(s + self.window, duration))) for s in starts]

    # -- text side -----------------------------------------------------------------------------
    def truncated(self, queries: list[str]) -> list[bool]:
        """Which sentences are longer than the text tower's context and are cut (as in training)."""
        return [self.tokenizer([text]).truncated > 0 for text in normalize_queries(queries)]

    @torch.no_grad()
    def predict(self, video: EncodedVideo | str | Path, queries: list[str], top_k: int = 5) -> list[list[Moment]]:
        if top_k < 1:
            raise InputError(f"top_k is {top_k}; ask for at least 1 moment per query")
        if not isinstance(video, EncodedVideo):
            video = self.encode_video(video)
        texts = normalize_queries(queries)
        tokens = self.tokenizer(texts).tokens.to(self.device)
        sentences = self.retriever.embed_queries(tokens)
        sentence_video = torch.zeros(len(texts), dtype=torch.long, device=self.device)
        all_moments, all_scores = [], []
        for (start, end), maps in zip(video.windows, video.maps):
            all_scores.append(self.retriever.score(maps, sentences, sentence_video, self.cfg.eval.contrastive_power))
            seconds = grid_moments(self.grid, torch.tensor(end - start, dtype=torch.float64), self.cfg.model.num_clips)
            all_moments.append(seconds + start)
        # windows share no grid: candidates are ranked in absolute seconds, by evaluation's ranking
        ranked = rank_segments(
            torch.cat(all_scores, dim=1), torch.cat(all_moments), top_k, self.cfg.eval.nms_threshold
        )  # [Q, C_total] scores of [C_total, 2] candidates
        results = []
        for moments, scores, valid in zip(ranked.moments.tolist(), ranked.scores.tolist(), ranked.valid.tolist()):
            results.append(
                [Moment(round(s, 3), round(e, 3), score) for (s, e), score, ok in zip(moments, scores, valid) if ok]
            )
        return results


@run_cli  # user errors: one line, the kind of problem and its fix; no traceback
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vdi.predict", description="Find when sentences happen in a video.")
    parser.add_argument("--checkpoint", required=True, help="runs/<name>/best/model.pt")
    parser.add_argument("video", help="a video file")
    parser.add_argument("sentences", nargs="*", help="one or more sentences")
    parser.add_argument("--queries", default=None, help="a text file with one sentence per line")
    parser.add_argument("--top-k", type=int, default=5, help="moments per sentence (>= 1)")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="text tower precision")
    parser.add_argument("--clip-pretrained", default=None, help="where the visual tower's weights come from")
    args = parser.parse_args(argv)
    sentences = list(args.sentences)
    if args.top_k < 1:
        raise InputError(f"--top-k is {args.top_k}; ask for at least 1 moment per sentence")
    if args.queries:
        path = Path(args.queries)
        if not path.is_file():
            raise FileNotFoundError(f"queries file {path} not found")
        sentences += [line for line in read_utf8(path, "queries file").splitlines() if line.strip()]
    if not sentences:
        raise QueryError('no sentence given: pass "a sentence" after the video or --queries FILE')
    if not Path(args.video).is_file():
        raise FileNotFoundError(f"video {args.video} not found")
    for position, sentence in enumerate(sentences):
        if not normalize_query(sentence):
            raise QueryError(f"sentence {position + 1} is empty; every query needs at least one word")
    predictor = Predictor.from_checkpoint(args.checkpoint, args.device, args.clip_pretrained, args.precision)
    video = predictor.encode_video(args.video)
    results = predictor.predict(video, sentences, args.top_k)
    cut = predictor.truncated(sentences)
    for position, was_cut in enumerate(cut):
        if was_cut:
            print(
                f"warning: sentence {position + 1} is longer than the text tower's context and was truncated",
                file=sys.stderr,
            )
    if args.json:
        for sentence, moments, was_cut in zip(sentences, results, cut):
            print(json.dumps({"query": sentence, "truncated": was_cut, "moments": [m.__dict__ for m in moments]}))
        return 0
    print(f"{args.video}: {video.duration:.2f} s, {len(video.windows)} window(s)")
    for sentence, moments in zip(sentences, results):
        print(f"\n{sentence}")
        print(f"  {'rank':>4s} {'start':>8s} {'end':>8s} {'score':>7s}")
        for rank, moment in enumerate(moments, start=1):
            print(f"  {rank:>4d} {moment.start:8.2f} {moment.end:8.2f} {moment.score:7.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
