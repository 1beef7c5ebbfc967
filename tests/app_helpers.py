"""A tiny world for the demo page's tests: an (untrained) tiny checkpoint whose config points at a
folder of test videos with their annotated sentences, laid out like the synthetic world's."""

from __future__ import annotations

from pathlib import Path

import torch
from helpers import TINY_RETRIEVER, write_video

from vdi.checkpoint import save_inference_checkpoint
from vdi.config import load_config, to_dict
from vdi.data.format import weights_identity
from vdi.encoders import create_clip
from vdi.injection import build_vdi_model

VIDEO_SECONDS = {"test_0000": 6.0, "test_0001": 9.0}
SENTENCES = {"test_0000": ["the red circle moves to the left", "a blue star spins"], "test_0001": ["a square grows"]}


def tiny_world(folder: Path) -> Path:
    """``folder``/world/{videos,annotations,shards} and ``folder``/model.pt; returns the checkpoint."""
    world = folder / "world"
    (world / "videos").mkdir(parents=True)
    (world / "annotations").mkdir()
    lines = []
    for seed, (video_id, seconds) in enumerate(VIDEO_SECONDS.items()):
        write_video(world / "videos" / f"{video_id}.mp4", seconds, seed=seed)
        lines += [f"{video_id} 1.00 3.00##{sentence}" for sentence in SENTENCES[video_id]]
    (world / "annotations" / "test.txt").write_text("\n".join(lines) + "\n")
    torch.manual_seed(0)
    clip = create_clip("vdi-test-tiny", None)
    clip_path = folder / "clip.pt"
    torch.save(clip.state_dict(), clip_path)
    cfg = load_config(
        "tiny", [f"model.clip.pretrained={clip_path}", f"data.shard_root={world / 'shards'}", *TINY_RETRIEVER]
    )
    model = build_vdi_model(cfg, clip)
    metadata = {"feature_fps": 2.0, "max_train_duration": 8.0, "clip_weights": weights_identity(str(clip_path))}
    path = folder / "model.pt"
    save_inference_checkpoint(path, model.retriever.state_dict(), to_dict(cfg), {}, 1, metadata)
    return path
