"""The frozen benchmark's tiny CLIP ships with the code: a fresh clone copies it instead of
pre-training, and the shipped bytes are what pre-training makes (checked in full by the
integration test; the unit tests check the entry and the build's choice of source)."""

import inspect
import json
import shutil

import pytest
import torch

from data_prep.synthetic import build as world_build
from data_prep.synthetic.pretrain import CLIP_NAME
from vdi.data.format import sha256_file

CLIP_FILE = f"{CLIP_NAME}.pt"


def _default_settings() -> tuple[int, int, int]:
    """The build's default pre-training: contrastive steps, attribute (warm-up) steps, seed."""
    defaults = inspect.signature(world_build.build).parameters
    return tuple(defaults[name].default for name in ("pretrain_steps", "pretrain_warmup_steps", "seed"))


def _default_entry():
    return world_build.shipped_clip_entry(world_build.clip_stage_key(*_default_settings()))


def test_the_shipped_tiny_clip_is_the_default_settings_entry_whole_and_alone():
    """Changing the pre-training (settings or CLIP_VERSION) leaves no stale weights behind: the
    shipped folder holds exactly the entry of the default settings, and its bytes are the recorded
    ones."""
    entry = _default_entry()
    assert [p.name for p in world_build.SHIPPED_CLIPS.iterdir()] == [entry.name], (
        "data_prep/synthetic/weights/ is stale: rebuild it with python -m data_prep synthetic --pretrain "
        "and copy the cache entry there"
    )
    info = json.loads((entry / "stage.json").read_text())
    assert sha256_file(entry / CLIP_FILE) == info["sha256"]
    assert info["steps"] == 1200 and info["zero_shot_colour"] >= 90  # the OOD colours are known to it
    state = torch.load(entry / CLIP_FILE, map_location="cpu", weights_only=True)
    assert state["visual.conv1.weight"].dtype == torch.float32


def test_a_fresh_build_copies_the_shipped_clip_and_pretrain_reports_whether_the_bytes_match(
    tmp_path, monkeypatch, capsys
):
    """Shipped weights come before the per-user cache; --pretrain trains anyway and says whether
    the bytes equal the shipped ones (they do: pre-training is seeded); a shipped entry whose
    bytes lost their checksum is ignored."""
    monkeypatch.setattr(world_build, "SHIPPED_CLIPS", tmp_path / "weights")

    def world(name, **options):
        world_build.build(
            tmp_path / name, total_videos=8, pretrain_steps=2, pretrain_warmup_steps=2, workers=1, **options
        )
        clip = json.loads((tmp_path / name / "world.json").read_text())["clip"]
        return (tmp_path / name / "clip" / CLIP_FILE).read_bytes(), clip, capsys.readouterr().out

    made, clip, out = world("a", cache_dir=tmp_path / "cache")
    assert clip["source"] == "pretrained" and "shipped" not in out
    (cached,) = (tmp_path / "cache" / "synthetic-clip").iterdir()
    shipped = world_build.shipped_clip_entry(world_build.clip_stage_key(2, 2, 0))
    shipped.parent.mkdir()
    shutil.copytree(cached, shipped)

    copied, clip, out = world("b", cache_dir=tmp_path / "cache")
    assert copied == made and clip["source"] == "shipped" and "copied from the shipped weights" in out

    again, clip, out = world("c", cache_dir=None, pretrain_here=True)
    assert again == made and clip["source"] == "pretrained"
    assert "pre-trained bytes identical to the shipped weights" in out

    info = json.loads((shipped / "stage.json").read_text())
    (shipped / "stage.json").write_text(json.dumps({**info, "sha256": "0" * 64}))
    again, clip, out = world("d", cache_dir=tmp_path / "cache")
    assert "ignoring the damaged entry" in out and clip["source"] == "cache" and again == made
    _, clip, out = world("e", cache_dir=None, pretrain_here=True)
    assert "DIFFERS from the shipped weights" in out


@pytest.mark.integration
def test_pretraining_reproduces_the_shipped_tiny_clip_bit_for_bit(tmp_path):
    """The default pre-training (1,200 steps; 5-17 minutes on 2 cores) makes the shipped bytes."""
    from data_prep.synthetic.pretrain import pretrain

    entry = _default_entry()
    steps, warmup_steps, seed = _default_settings()
    torch.manual_seed(seed)
    model, result = pretrain(steps=steps, warmup_steps=warmup_steps, seed=seed, progress=False)
    torch.save(model.state_dict(), tmp_path / CLIP_FILE)
    info = json.loads((entry / "stage.json").read_text())
    assert sha256_file(tmp_path / CLIP_FILE) == info["sha256"]
    assert round(result.colour_accuracy, 1) == info["zero_shot_colour"]
