"""Evaluation: R@k IoU=m and mIoU per split, and the dynamics probe (paper Fig. 3).

The probe retrieves the same moments with the full query Q, the static query Q^s and the
dynamic query Q^d. A model that understands change should lose less when only the change words
(Q^d) are left, relative to the baseline.

    python -m vdi.evaluate --checkpoint runs/<name>/best/model.pt --split test [--probe]

Ranks evaluate disjoint slices of a split; rank 0 gathers the top-k moments and computes the
metrics (pure functions in ``vdi.metrics``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

import torch

from vdi.batch import Batch
from vdi.cli import run_cli
from vdi.config import Config
from vdi.distributed import gather_objects
from vdi.metric_keys import (
    CEILING_R1_AT_05,
    COUNT_NAMES,
    GROUNDING_KINDS,
    R1_AT_05,
    is_grounding_name,
    table_label,
)
from vdi.metrics import (
    candidate_grid,
    derangement_across,
    grounding_metrics,
    metrics_from_ranked,
    rank_moments,
    sparse_mask,
    temporal_iou,
)
from vdi.model import MomentRetriever

VARIANT_TOKENS = {"query": "query_tokens", "static": "static_tokens", "dynamic": "dynamic_tokens"}


def video_key(video_id: str) -> int:
    """A stable int64 for a video id, so per-query video identity survives tensor gathers."""
    return int.from_bytes(hashlib.blake2b(video_id.encode(), digest_size=8).digest(), "little", signed=True)


@torch.no_grad()
def rank_batches(
    retriever: MomentRetriever,
    batches: Iterable[Batch],
    cfg: Config,
    variants: tuple[str, ...] = ("query",),
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, torch.Tensor]]:
    """Top-k moments after NMS for every query of every batch, per query variant.

    Each variant holds ``moments`` [Q, k, 2], ``valid``, ``truth`` [Q, 2], ``video`` (``video_key``)
    and ``duration`` per query. The ``query`` variant also holds ``cross_moments`` /
    ``cross_valid`` / ``cross_used``: the same videos retrieved with a sentence of another video
    of the batch (``vdi.metrics.derangement_across``), for the cross-video grounding gain.
    """
    was_training = retriever.training
    retriever.eval()
    grid = retriever.candidates.to(device)
    k = max(cfg.eval.recall_ks)
    parts: dict[str, dict[str, list[torch.Tensor]]] = {v: {} for v in variants}

    def keep(variant: str, **tensors: torch.Tensor) -> None:
        for key, value in tensors.items():
            parts[variant].setdefault(key, []).append(value.cpu())

    for batch in batches:
        batch = batch.to(device)
        maps = retriever.video_maps(batch.video_features)
        keys = torch.tensor([video_key(v) for v in batch.video_ids], dtype=torch.long)[batch.sentence_video.cpu()]
        durations = batch.sentence_durations
        for variant in variants:
            sentences = retriever.embed_queries(getattr(batch, VARIANT_TOKENS[variant]))
            fused = retriever.score(maps, sentences, batch.sentence_video, cfg.eval.contrastive_power)
            ranked = rank_moments(fused, grid, cfg.model.num_clips, durations, k, cfg.eval.nms_threshold)
            keep(
                variant, moments=ranked.moments, valid=ranked.valid, truth=batch.moments, video=keys, duration=durations
            )
            if variant == "query":
                keep(variant, batch_videos=torch.tensor([batch.num_videos]))
                partner, used = derangement_across(batch.sentence_video.cpu())
                crossed = sentences.select(partner.to(device))
                cross_fused = retriever.score(maps, crossed, batch.sentence_video, cfg.eval.contrastive_power)
                ranked = rank_moments(cross_fused, grid, cfg.model.num_clips, durations, k, cfg.eval.nms_threshold)
                keep(variant, cross_moments=ranked.moments, cross_valid=ranked.valid, cross_used=used)
    retriever.train(was_training)
    return {
        variant: {key: torch.cat(values) for key, values in items.items()} if items else {}
        for variant, items in parts.items()
    }


def gather_ranked(ranked: dict[str, dict[str, torch.Tensor]], world_size: int) -> dict[str, dict[str, torch.Tensor]]:
    """Concatenate every rank's ranked moments (all ranks call this)."""
    if world_size == 1:
        return ranked
    gathered = gather_objects(ranked, world_size)
    return {
        variant: {
            key: torch.cat([part[variant][key] for part in gathered if part[variant][key].numel()]) for key in keys
        }
        for variant, keys in ranked.items()
    }


def check_coverage(ranked: dict[str, torch.Tensor], stream, split: str) -> dict[str, float]:
    """Videos / queries scored against what the split's manifest lists: a mismatch is refused, or
    (``stream.skip_corrupt``) warned about loudly; returns the counts to record with the metrics."""
    videos = int(ranked["batch_videos"].sum()) if "batch_videos" in ranked else 0
    queries = int(ranked["truth"].shape[0]) if ranked else 0
    counts = {"scored videos": float(videos), "skipped shards": float(len(stream.skipped))}
    expected_queries = stream.num_queries
    if videos == stream.num_videos and expected_queries in (None, queries) and not stream.skipped:
        return counts
    listed = f"{stream.num_videos} videos" + (f" / {expected_queries} queries" if expected_queries is not None else "")
    message = (
        f"split {split}: scored {videos} videos / {queries} queries, but the usable shards of {stream.split_dir} list "
        f"{listed}"
    )
    if stream.skipped:
        message += f" ({len(stream.skipped)} corrupt shards skipped: {stream.skipped[0]})"
    if not stream.skip_corrupt:
        from vdi.data.format import ShardError

        raise ShardError(
            f"{message}; the shards and their manifest disagree: check them (python -m data_prep verify "
            f"{stream.split_dir}) and rebuild the split, or set data.skip_corrupt=true to score what is readable"
        )
    import warnings

    warnings.warn(f"{message}; these metrics cover part of the split (data.skip_corrupt=true)", stacklevel=2)
    print(f"WARNING: {message}; the metrics cover part of the split", file=sys.stderr)
    return counts


def metrics_of(ranked: dict[str, torch.Tensor], cfg: Config, grounding: bool = True) -> dict[str, float]:
    """R@k and mIoU of one split's ranked moments, then (``grounding``) its ceiling, prior and gains."""
    if not ranked or ranked["truth"].shape[0] == 0:
        from vdi.data.format import ShardError

        raise ShardError("the split has no queries to evaluate: check its shards (python -m data_prep verify)")
    results = metrics_from_ranked(
        ranked["moments"], ranked["valid"], ranked["truth"], cfg.eval.recall_ks, cfg.eval.iou_thresholds
    )
    if grounding:
        grid = candidate_grid(sparse_mask(cfg.model.num_clips, cfg.model.pooling_counts))
        results |= grounding_metrics(
            ranked["moments"],
            ranked["valid"],
            ranked["truth"],
            ranked["video"],
            ranked["duration"],
            grid,
            cfg.model.num_clips,
            cfg.eval.iou_thresholds,
            ranked.get("cross_moments"),
            ranked.get("cross_valid"),
            ranked.get("cross_used"),
        )
    return results


def per_query_record(ranked: dict[str, torch.Tensor]) -> dict:
    """Each query's top-1 IoU (0 when none) in evaluation order, with a fingerprint of that order
    (video keys and ground truth), so a report pairs two runs' queries only when they match."""
    iou = temporal_iou(ranked["moments"][:, 0], ranked["truth"]).masked_fill(~ranked["valid"][:, 0], 0.0)
    order = hashlib.sha256(ranked["video"].numpy().tobytes() + ranked["truth"].double().numpy().tobytes())
    return {"order": order.hexdigest()[:16], "top1_iou": [round(float(v), 6) for v in iou]}


def print_table(results: dict[str, dict[str, float]], title: str = "") -> str:
    """Print R@k / mIoU per split, then the grounding table (ceiling, prior, gains) where present."""
    names = [n for n in next(iter(results.values())) if not is_grounding_name(n) and n not in COUNT_NAMES]
    width = max(len(s) for s in results) + 2
    lines = [title] if title else []
    lines.append(" " * width + "".join(f"{n:>9s}" for n in names))
    for split, metrics in results.items():
        lines.append(f"{split:<{width}s}" + "".join(f"{metrics.get(n, float('nan')):9.2f}" for n in names))
    ceiling_prefix = f"{GROUNDING_KINDS[0]} "
    grounded = {split: metrics for split, metrics in results.items() if "queries" in metrics}
    if grounded:
        thresholds = [n.split(" ", 1)[1] for n in next(iter(grounded.values())) if n.startswith(ceiling_prefix)]
        lines.append(
            "grounding (percent; ceiling = best query-blind top-1, prior = best constant cell, "
            "gain = true minus deranged sentences of the same video, xgain = of other videos):"
        )
        header = ["R1", "ceiling", "prior", "gain", "xgain"]
        lines.append(" " * width + f"{'':>8s}" + "".join(f"{h:>9s}" for h in header) + f"{'queries':>9s}{'videos':>8s}")
        for split, metrics in grounded.items():
            for threshold in thresholds:
                cells = [metrics.get(threshold, float("nan"))] + [
                    metrics.get(f"{kind} {threshold}", float("nan")) for kind in GROUNDING_KINDS
                ]
                lines.append(
                    f"{split:<{width}s}{threshold:>8s}"
                    + "".join(f"{value:9.2f}" for value in cells)
                    + f"{int(metrics['queries']):9d}{int(metrics['videos']):8d}"
                )
        for split, metrics in grounded.items():
            skipped = int(metrics.get("skipped shards", 0))
            if skipped:
                lines.append(
                    f"WARNING: {split}: {skipped} corrupt shards were skipped (data.skip_corrupt): these numbers "
                    f"cover {int(metrics.get('scored videos', 0))} videos, part of the split"
                )
            singles = int(metrics.get("single-query videos", 0))
            if singles:
                lines.append(f"{split}: {singles} single-query videos are left out of the gains")
            ceiling = metrics.get(CEILING_R1_AT_05)
            if ceiling is not None and metrics.get(R1_AT_05, 0.0) <= ceiling:
                lines.append(
                    f"warning: {split} {R1_AT_05} {metrics[R1_AT_05]:.2f} does not exceed its query-blind ceiling "
                    f"{ceiling:.2f}: R@k alone cannot show that this model reads the sentence (see gain)"
                )
    text = "\n".join(lines)
    print(text)
    return text


def evaluate_checkpoint(
    checkpoint: str | Path,
    splits: list[str],
    shard_root: str | None = None,
    probe: bool = False,
    batch_size: int | None = None,
    device: str = "cpu",
) -> dict[str, dict[str, float]]:
    """Evaluate a saved retriever on shard splits (single process)."""
    from vdi.checkpoint import load_retriever
    from vdi.data.format import check_compatible, weights_identity
    from vdi.data.loader import ShardStream, make_loader, split_source

    retriever, cfg, _ = load_retriever(checkpoint, device)
    root = Path(shard_root or cfg.data.shard_root)
    results: dict[str, dict[str, float]] = {}
    streams = {}
    for split in splits:  # every split is opened and checked before any is evaluated
        source = split_source(replace(cfg.data, shard_root=str(root)), split)
        stream = ShardStream(
            **source,
            batch_size=batch_size or cfg.eval.batch_size,
            num_pre_clips=cfg.model.num_pre_clips,
            clip_name=cfg.model.clip.name,
            clip_config_dir=cfg.model.clip.config_dir,
            training=False,
            load_patches=False,
            skip_corrupt=cfg.data.skip_corrupt,
            verify_content=cfg.data.verify_shards,
        )
        check_compatible(
            stream.manifest,
            cfg.model.clip.name,
            weights_identity(cfg.model.clip.pretrained),
            retriever.feature_dim,
            False,
            str(source["split_dir"]),
        )
        streams[split] = stream
    variants = ("query", "static", "dynamic") if probe else ("query",)
    for split, stream in streams.items():
        ranked = rank_batches(retriever, make_loader(stream, 0), cfg, variants, device)
        counts = check_coverage(ranked["query"], stream, split)
        for variant in variants:
            results[table_label(split, variant)] = metrics_of(ranked[variant], cfg, grounding=variant == "query")
        results[split] |= counts
    return results


@run_cli
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vdi.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="runs/<name>/best/model.pt")
    parser.add_argument("--split", nargs="+", required=True, help="split name(s) under the shard root")
    parser.add_argument("--shard-root", default=None, help="default: the checkpoint config's data.shard_root")
    parser.add_argument("--probe", action="store_true", help="also retrieve with Q^s and Q^d (paper Fig. 3)")
    parser.add_argument("--json", default=None, help="write the metrics to this JSON file")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    if args.json and not Path(args.json).resolve().parent.is_dir():
        print(f"error: --json {args.json}: folder {Path(args.json).resolve().parent} does not exist", file=sys.stderr)
        return 2
    results = evaluate_checkpoint(args.checkpoint, args.split, args.shard_root, args.probe, device=args.device)
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
