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
import json
import sys
from collections.abc import Iterable
from pathlib import Path

import torch

from vdi.batch import Batch
from vdi.config import Config
from vdi.metrics import candidate_grid, metrics_from_ranked, rank_moments
from vdi.model import MomentRetriever

VARIANT_TOKENS = {"query": "query_tokens", "static": "static_tokens", "dynamic": "dynamic_tokens"}


@torch.no_grad()
def rank_batches(
    retriever: MomentRetriever,
    batches: Iterable[Batch],
    cfg: Config,
    variants: tuple[str, ...] = ("query",),
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, torch.Tensor]]:
    """Top-k moments after NMS for every query of every batch, per query variant."""
    was_training = retriever.training
    retriever.eval()
    grid = candidate_grid(retriever.head.mask).to(device)
    k = max(cfg.eval.recall_ks)
    parts: dict[str, dict[str, list[torch.Tensor]]] = {v: {"moments": [], "valid": [], "truth": []} for v in variants}
    for batch in batches:
        batch = batch.to(device)
        maps = retriever.head.video_maps(batch.video_features.float())
        for variant in variants:
            tokens = getattr(batch, VARIANT_TOKENS[variant])
            sentences = retriever.head.sentence_embeddings(retriever.encode_queries(tokens).float())
            scores = retriever.head.score_maps(maps, sentences, batch.sentence_video)
            fused = scores.fused(cfg.eval.contrastive_power).float()
            ranked = rank_moments(fused, grid, cfg.model.num_clips, batch.sentence_durations, k, cfg.eval.nms_threshold)
            parts[variant]["moments"].append(ranked.moments.cpu())
            parts[variant]["valid"].append(ranked.valid.cpu())
            parts[variant]["truth"].append(batch.moments.cpu())
    retriever.train(was_training)
    return {
        variant: {key: torch.cat(values) if values else torch.zeros(0) for key, values in items.items()}
        for variant, items in parts.items()
    }


def gather_ranked(ranked: dict[str, dict[str, torch.Tensor]], world_size: int) -> dict[str, dict[str, torch.Tensor]]:
    """Concatenate every rank's ranked moments (all ranks call this)."""
    if world_size == 1:
        return ranked
    gathered: list = [None] * world_size
    torch.distributed.all_gather_object(gathered, ranked)
    return {
        variant: {
            key: torch.cat([part[variant][key] for part in gathered if part[variant][key].numel()]) for key in keys
        }
        for variant, keys in ranked.items()
    }


def metrics_of(ranked: dict[str, torch.Tensor], cfg: Config) -> dict[str, float]:
    return metrics_from_ranked(
        ranked["moments"], ranked["valid"], ranked["truth"], cfg.eval.recall_ks, cfg.eval.iou_thresholds
    )


def flat_metrics(results: dict[str, dict[str, float]]) -> dict[str, float]:
    """{"test": {"R1@0.5": 40.1}} -> {"test/R1@0.5": 40.1}"""
    return {f"{split}/{name}": value for split, metrics in results.items() for name, value in metrics.items()}


def print_table(results: dict[str, dict[str, float]], title: str = "") -> str:
    names = list(next(iter(results.values())).keys())
    width = max(len(s) for s in results) + 2
    lines = [title] if title else []
    lines.append(" " * width + "".join(f"{n:>9s}" for n in names))
    for split, metrics in results.items():
        lines.append(f"{split:<{width}s}" + "".join(f"{metrics[n]:9.2f}" for n in names))
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
    from vdi.data import ShardStream, make_loader
    from vdi.shards import check_compatible, weights_identity

    retriever, cfg, _ = load_retriever(checkpoint, device)
    root = Path(shard_root or cfg.data.shard_root)
    results: dict[str, dict[str, float]] = {}
    for split in splits:
        stream = ShardStream(
            root / split,
            batch_size=batch_size or cfg.eval.batch_size,
            num_pre_clips=cfg.model.num_pre_clips,
            clip_name=cfg.model.clip.name,
            clip_config_dir=cfg.model.clip.config_dir,
            training=False,
            load_patches=False,
        )
        check_compatible(
            stream.manifest,
            cfg.model.clip.name,
            weights_identity(cfg.model.clip.pretrained),
            retriever.feature_dim,
            False,
            str(root / split),
        )
        variants = ("query", "static", "dynamic") if probe else ("query",)
        ranked = rank_batches(retriever, make_loader(stream, 0), cfg, variants, device)
        for variant in variants:
            name = split if variant == "query" else f"{split} [{'Q^s' if variant == 'static' else 'Q^d'}]"
            results[name] = metrics_of(ranked[variant], cfg)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vdi.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="runs/<name>/best/model.pt")
    parser.add_argument("--split", nargs="+", required=True, help="split name(s) under the shard root")
    parser.add_argument("--shard-root", default=None, help="default: the checkpoint config's data.shard_root")
    parser.add_argument("--probe", action="store_true", help="also retrieve with Q^s and Q^d (paper Fig. 3)")
    parser.add_argument("--json", default=None, help="write the metrics to this JSON file")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    from vdi.errors import user_errors

    try:
        results = evaluate_checkpoint(args.checkpoint, args.split, args.shard_root, args.probe, device=args.device)
    except user_errors() as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print_table(results)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
