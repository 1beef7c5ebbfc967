"""vdi.engine's single-process optimizer: DeepSpeed ZeRO-1's arithmetic at world size 1.

The unit tests check its own contract (flat groups the parameters are views of, the clip and the
skipped step) against a plain torch reference; the integration test checks it against DeepSpeed
itself, bit for bit, through a resume across the two engines."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from vdi.checkpoint import checkpoint_tensors
from vdi.engine import SingleProcessZero

PROJECT = Path(__file__).resolve().parents[1]


def two_groups(seed: int = 0) -> tuple[nn.Module, list[dict]]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(3, 5), nn.Linear(5, 1, bias=False))  # 20 + 5 elements: odd groups
    head, text = list(model[0].parameters()), list(model[1].parameters())
    return model, [{"params": head, "name": "head"}, {"params": text, "name": "text"}]


def adamw(groups: list[dict]) -> torch.optim.AdamW:
    return torch.optim.AdamW(groups, lr=0.1, weight_decay=0.01, fused=True)


def test_parameters_are_views_of_padded_flat_groups():
    model, groups = two_groups()
    before = [p.detach().clone() for p in model.parameters()]
    zero = SingleProcessZero(adamw(groups), clip_grad=5.0)
    assert [flat.numel() for flat in zero.flats] == [20, 6]  # 15 + 5 = 20; 5 padded to 6 as DeepSpeed pads
    for p, value in zip(model.parameters(), before, strict=True):
        assert torch.equal(p, value)
    zero.flats[1][0] = 7.0  # the module sees the optimizer's buffer
    assert model[1].weight[0, 0].item() == 7.0


def test_step_clips_to_the_norm_and_matches_a_plain_adamw():
    model, groups = two_groups()
    reference, reference_groups = two_groups()
    zero = SingleProcessZero(adamw(groups), clip_grad=0.5)
    plain = adamw(reference_groups)
    x = torch.randn(16, 3)
    for _ in range(3):
        (model(x) ** 2).mean().mul(100).backward()
        (reference(x) ** 2).mean().mul(100).backward()
        norm = torch.nn.utils.clip_grad_norm_(reference.parameters(), 0.5)
        assert norm > 0.5  # the clip is exercised
        zero.step()
        plain.step()
        plain.zero_grad(set_to_none=True)
        assert all(p.grad is None for p in model.parameters())
    for mine, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)


def test_a_non_finite_gradient_norm_skips_the_step():
    model, groups = two_groups()
    zero = SingleProcessZero(adamw(groups), clip_grad=5.0)
    before = [p.detach().clone() for p in model.parameters()]
    (model(torch.randn(4, 3)).sum() * float("inf")).backward()
    zero.step()
    assert all(torch.equal(p, value) for p, value in zip(model.parameters(), before, strict=True))
    assert all(p.grad is None for p in model.parameters()) and not zero.optimizer.state


@pytest.mark.integration
def test_single_process_engine_equals_deepspeed_bit_for_bit_across_a_resume(tmp_path):
    """Epoch 1 under DeepSpeed ZeRO-1, then resumed (as a run from before dist.engine existed)
    under the single-process engine, ends bit for bit where two epochs of the single-process
    engine end: same gradients, norms, clip (0.05 clips every step here) and AdamW state."""
    from helpers import write_toy_dataset

    shards = write_toy_dataset(tmp_path / "shards", 40, per_shard=20, seed=3)

    def train(name: str, *extra: str) -> str:
        args = [
            f"data.shard_root={shards}",
            "data.eval_splits=[test]",
            "data.probe_split=null",
            "eval.select_split=test",
            f"run.root={tmp_path}",
            f"run.name={name}",
            "optim.batch_size=2",
            "optim.grad_clip=0.05",
            "track.enabled=false",
            f"dist.extensions_dir={PROJECT / '.cache' / 'torch_extensions'}",
            *extra,
        ]
        command = [sys.executable, "-m", "vdi.train", "--config", "tiny", *args]
        done = subprocess.run(command, capture_output=True, text=True, cwd=PROJECT, timeout=600)
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
        return done.stdout

    assert "engine: one CPU process, float32: DeepSpeed ZeRO-1's arithmetic" in train("single", "optim.max_epochs=2")
    assert "engine: DeepSpeed ZeRO-1, 1 process" in train("deepspeed", "optim.max_epochs=1", "dist.engine=deepspeed")
    config = tmp_path / "deepspeed" / "config.yaml"
    lines = config.read_text().splitlines(keepends=True)
    config.write_text("".join(line for line in lines if line.strip() != "engine: deepspeed"))  # as before dist.engine
    assert "resuming from" in train("deepspeed", "optim.max_epochs=2")
    mine, theirs = checkpoint_tensors(tmp_path / "single"), checkpoint_tensors(tmp_path / "deepspeed")
    assert mine.keys() == theirs.keys() and len(mine) > 10
    assert [key for key in mine if not torch.equal(mine[key], theirs[key])] == []


def test_only_one_fp32_cpu_process_at_zero_1_or_2_leaves_deepspeed():
    from vdi.config import load_config
    from vdi.engine import DistContext, uses_single_process_zero

    def single(*overrides: str, world: int = 1, device: str = "cpu") -> bool:
        ctx = DistContext(0, world, 0, torch.device(device), "gloo")
        return uses_single_process_zero(load_config("tiny", list(overrides)), ctx)

    assert single() and single("dist.zero_stage=2")
    assert not single(world=2)
    assert not single("dist.zero_stage=0")  # stage 0's clip is torch-style: other bits
    assert not single("dist.precision=bf16")
    assert not single("dist.engine=deepspeed")
    assert not single(device="meta")
