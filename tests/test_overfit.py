"""The full tiny model (tiny CLIP text tower, MMN head, both injection losses) overfits a few
videos with a planted signal: the loss goes down and R@1 IoU=0.5 goes up."""

import torch
from helpers import planted_samples

from vdi.batch import collate
from vdi.config import load_config
from vdi.encoders import Tokenizer
from vdi.injection import build_vdi_model
from vdi.metrics import retrieval_metrics


def _recall(model, batch, cfg):
    retriever = model.retriever
    model.eval()
    with torch.no_grad():
        maps, sentences = retriever.video_maps(batch.video_features), retriever.embed_queries(batch.query_tokens)
        fused = retriever.score(maps, sentences, batch.sentence_video, cfg.eval.contrastive_power)
    model.train()
    metrics = retrieval_metrics(
        fused,
        retriever.candidates,
        cfg.model.num_clips,
        batch.sentence_durations,
        batch.moments,
        (1,),
        (0.5,),
        cfg.eval.nms_threshold,
    )
    return metrics["R1@0.5"]


def test_tiny_model_overfits_planted_signal():
    torch.manual_seed(0)
    cfg = load_config("tiny", ["model.num_pre_clips=16", "model.num_clips=8", "model.pooling_counts=[7]"])
    model = build_vdi_model(cfg)
    batch = collate(planted_samples(6, seed=1), Tokenizer(cfg.model.clip.name), cfg.model.num_pre_clips)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    before = _recall(model, batch, cfg)
    losses = []
    for _ in range(120):
        terms = model(batch)
        optimizer.zero_grad()
        terms.total.backward()
        optimizer.step()
        losses.append(float(terms.total.detach()))
    after = _recall(model, batch, cfg)
    assert sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10
    assert after >= 75.0 and after > before + 25.0, (before, after)
