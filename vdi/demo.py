"""Interim main job (until the training engine lands): train the tiny VDI model on generated
features with a planted signal for a few seconds on the CPU and print R@1 before and after.

    python -m vdi.demo [--steps 120]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from vdi.batch import collate
from vdi.config import load_config
from vdi.encoders import Tokenizer
from vdi.injection import build_vdi_model
from vdi.metrics import candidate_grid, retrieval_metrics
from vdi.toy import planted_samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    cfg = load_config("tiny", ["model.num_pre_clips=16", "model.num_clips=8", "model.pooling_counts=[7]"])
    model = build_vdi_model(cfg)
    batch = collate(planted_samples(6, seed=args.seed + 1), Tokenizer(cfg.model.clip.name), cfg.model.num_pre_clips)
    grid = candidate_grid(model.retriever.head.mask)

    def recall() -> dict[str, float]:
        model.eval()
        with torch.no_grad():
            scores = model.retriever(batch.video_features, batch.query_tokens, batch.sentence_video)
        model.train()
        return retrieval_metrics(
            scores.fused(cfg.eval.contrastive_power),
            grid,
            cfg.model.num_clips,
            batch.sentence_durations,
            batch.moments,
        )

    before = recall()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    start = time.perf_counter()
    for step in range(args.steps):
        terms = model(batch)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
        if step % 20 == 0 or step == args.steps - 1:
            values = " ".join(f"{k}={v:.3f}" for k, v in terms.detached().items())
            print(f"step {step:4d} {values}")
    after = recall()
    print(f"{args.steps} steps in {time.perf_counter() - start:.1f} s")
    for name in before:
        print(f"{name:8s} before {before[name]:6.1f}  after {after[name]:6.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
