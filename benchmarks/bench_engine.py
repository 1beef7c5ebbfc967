"""One process's training engine: DeepSpeed ZeRO-1 against vdi.engine's single-process optimizer
(the same arithmetic without DeepSpeed's per-tensor Python loops), on the main job's recipe.

Run on demand (about 3 minutes on 2 cores, after `make demo` has built data/synthetic):

    python benchmarks/bench_engine.py [--epochs 1]

Each engine trains ``--epochs`` epochs of ``synthetic_demo`` (VDI, batch 4, 175 steps an epoch) in
a scratch folder, one engine after the other in this one run; it prints each run's wall time (set-up
and training) and the training epochs alone, the ratio, and whether the two runs' final weights
and AdamW states are equal bit for bit.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

PROJECT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    import torch

    from vdi.checkpoint import checkpoint_tensors
    from vdi.config import load_config
    from vdi.train import Trainer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    args = parser.parse_args(argv)
    if not (PROJECT / "data" / "synthetic" / "shards").exists():
        sys.exit("data/synthetic/shards is missing: run `make demo` (or python -m data_prep synthetic) first")
    root = Path(tempfile.mkdtemp(prefix="vdi-engine-"))
    timings: dict[str, tuple[float, float]] = {}
    steps = 0
    os.chdir(PROJECT)  # the preset's data paths are relative to the project root
    try:
        for engine in ("deepspeed", "auto"):
            cfg = load_config(
                "synthetic_demo",
                [
                    f"optim.max_epochs={args.epochs}",
                    f"run.root={root}",
                    f"run.name={engine}",
                    f"dist.engine={engine}",
                    "track.enabled=false",
                    f"dist.extensions_dir={PROJECT / '.cache' / 'torch_extensions'}",
                ],
            )
            start = time.perf_counter()
            trainer = Trainer(cfg)
            steps = trainer.train_stream.batches_per_epoch * args.epochs
            epochs_start = time.perf_counter()
            for epoch in range(1, args.epochs + 1):
                trainer.train_epoch(epoch)
            epochs = time.perf_counter() - epochs_start
            trainer.save_checkpoint()
            timings[engine] = (time.perf_counter() - start, epochs)
            del trainer
        theirs, mine = checkpoint_tensors(root / "deepspeed"), checkpoint_tensors(root / "auto")
        equal = mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
        print(
            f"engine timings, synthetic_demo, {args.epochs} epoch(s) = {steps} steps, "
            f"{torch.get_num_threads()} threads:"
        )
        for engine, label in (("deepspeed", "DeepSpeed ZeRO-1"), ("auto", "single-process (dist.engine=auto)")):
            total, epochs = timings[engine]
            print(
                f"  {label:34s} set-up + train {total:6.1f} s   train {epochs:6.1f} s"
                f"   {1000 * epochs / steps:5.1f} ms/step"
            )
        ratio = timings["deepspeed"][1] / timings["auto"][1]
        print(f"  training speed-up {ratio:.2f}x; weights and AdamW state bit for bit equal: {equal}")
        return 0 if equal else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
