"""Streaming loader: WebDataset shards -> batches of videos with all their sentences.

Reading uses webdataset's tar iterators; the splitting, shuffling and epoch length are explicit
here so that a run is reproducible and resumable to the batch:

* **Node splitting.** Each epoch the shard list is permuted with ``rng(seed, epoch)`` (the same
  on every rank). With at least as many shards as ranks, rank r reads shards ``r::world``;
  with fewer shards every rank reads them all and keeps samples ``i % world == r``. Either
  way the ranks see disjoint samples.
* **Shuffling.** A sample shuffle buffer seeded with ``rng(seed, epoch, rank)``.
* **Epoch length.** Every rank yields exactly ``num_videos // (world * batch_size)`` batches
  (at least one), re-reading its shards in a new order if it runs short, so no rank waits for
  another at the end of an epoch.
* **Worker splitting.** Worker w of W decodes the batches ``start + w, start + w + W, ...`` of
  its rank's stream and skips the others without decoding them. The batch sequence is thus a
  function of (seed, epoch, rank, world) alone, not of the number of workers, and a resumed
  epoch starts at ``start`` = the batches already consumed: nothing repeated, nothing lost.
  (The price: every worker reads the rank's shard bytes; decoding, the costly part, is split.)
* **Corrupt shards.** A shard whose size or content (sha256, hashed once per process and file
  identity) differs from the manifest (:func:`~vdi.data.format.check_shard`, the check
  ``python -m data_prep verify`` makes too), or whose tar stream breaks, raises
  :class:`~vdi.data.format.ShardError` naming it; with ``skip_corrupt`` it is skipped and counted
  (``skipped``: one entry per shard). A manifest whose totals disagree with its own shard list
  is refused either way.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from vdi.batch import Batch, collate
from vdi.checkpoint import LoaderState
from vdi.data.format import (
    MANIFEST_NAME,
    ShardError,
    ShardInfo,
    ShardManifest,
    check_shard,
    decode_sample,
    listed_totals_mismatch,
    read_manifest,
    sha256_file,
)

# sha256 of shard files already hashed by this process, by file identity (path, size, mtime, inode):
# a file is hashed once however many streams open it, and again only if it changes
_CONTENT_HASHES: dict[tuple, str] = {}


def content_hash(path: Path) -> str:
    status = path.stat()
    identity = (str(path.resolve()), status.st_size, status.st_mtime_ns, status.st_ino)
    if identity not in _CONTENT_HASHES:
        _CONTENT_HASHES[identity] = sha256_file(path)
    return _CONTENT_HASHES[identity]


def check_manifest_totals(split_dir: Path, manifest: ShardManifest) -> None:
    """Refuse a manifest whose video / query totals disagree with its own shard list."""
    listed = listed_totals_mismatch(manifest)
    if listed is not None:
        videos, queries = listed
        raise ShardError(
            f"{split_dir / MANIFEST_NAME} says {manifest.num_videos} videos / {manifest.num_queries} queries, but its "
            f"shards list {videos} / {queries}: the manifest was edited or is from another build; rebuild the split "
            "(python -m data_prep shards)"
        )


def _usable_shards(
    split_dir: Path, manifest: ShardManifest, skip_corrupt: bool, verify_content: bool = True
) -> tuple[list[ShardInfo], list[str]]:
    check_manifest_totals(split_dir, manifest)
    usable, skipped = [], []
    for shard in manifest.shards:
        path = split_dir / shard.name
        fault = check_shard(path, shard, content_hash if verify_content else None)
        if fault is None:
            usable.append(shard)
            continue
        if fault.kind == "missing":
            problem = "is missing"
        elif fault.kind == "size":
            problem = f"has {fault.size} bytes, the manifest says {shard.bytes} (truncated or replaced)"
        else:
            problem = "has content whose sha256 differs from the manifest's (corrupted or replaced)"
        if skip_corrupt:
            skipped.append(f"{path} {problem}")
            warnings.warn(f"skipping shard {path}: it {problem} (data.skip_corrupt=true)", stacklevel=3)
        else:
            raise ShardError(
                f"shard {path} {problem}; rebuild the split (python -m data_prep shards) or set data.skip_corrupt=true"
            )
    if not usable:
        raise ShardError(f"no usable shard in {split_dir} ({len(skipped)} skipped)")
    return usable, skipped


class ShardStream(IterableDataset):
    """Batches of one rank for one epoch (see the module docstring for the rules)."""

    def __init__(
        self,
        split_dir: str | Path,
        *,
        batch_size: int,
        num_pre_clips: int,
        clip_name: str,
        clip_config_dir: str | None = None,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        training: bool = True,
        shuffle_buffer: int = 256,
        load_patches: bool = True,
        skip_corrupt: bool = False,
        hold_out: tuple[float, int] | None = None,
        hold_out_part: str = "rest",
        verify_content: bool = True,
    ):
        """``hold_out=(fraction, seed)`` splits the split's videos into a seeded validation part
        (``hold_out_part="held"``) and the rest (``"rest"``, for training): ``held_out_keys``."""
        super().__init__()
        self.split_dir = Path(split_dir)
        self.manifest = read_manifest(self.split_dir)
        self.shards, self.skipped = _usable_shards(self.split_dir, self.manifest, skip_corrupt, verify_content)
        if load_patches and not self.manifest.has_patches:
            raise ShardError(
                f"shards in {self.split_dir} have no patch tokens, but L^sd needs them: rebuild them with "
                "python -m data_prep without --no-patches, or set injection.spatial_dynamic=none"
            )
        self.batch_size = batch_size
        self.num_pre_clips = num_pre_clips
        self.clip_name, self.clip_config_dir = clip_name, clip_config_dir
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.training = training
        self.shuffle_buffer = shuffle_buffer
        self.load_patches = load_patches
        self.skip_corrupt = skip_corrupt
        self.epoch, self.start_batch = 1, 0
        if hold_out_part not in ("held", "rest"):
            raise ValueError(f"hold_out_part must be 'held' or 'rest', got {hold_out_part!r}")
        self.keep_held = hold_out_part == "held"
        self.held = None
        num_videos = sum(s.num_videos for s in self.shards)
        # queries the usable shards hold (None for a hold-out part: the manifest counts whole shards)
        self.num_queries: int | None = sum(s.num_queries for s in self.shards)
        if hold_out:
            self.num_queries = None
            # keys run over the whole split as written, so the hold-out is drawn from the manifest
            total = sum(s.num_videos for s in self.manifest.shards)
            self.held = held_out_keys(total, *hold_out)
            num_videos = len(self.held) if self.keep_held else total - len(self.held)
        self.num_videos = num_videos
        if training:
            self.batches_per_epoch = max(1, num_videos // (world_size * batch_size))
        else:
            mine = len(range(rank, num_videos, world_size))
            self.batches_per_epoch = -(-mine // batch_size)
        self._tokenizer = None

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= self.batches_per_epoch:
            raise ValueError(f"start batch {start_batch} outside the epoch's {self.batches_per_epoch} batches")
        self.epoch, self.start_batch = epoch, start_batch

    def __len__(self) -> int:
        return self.batches_per_epoch - self.start_batch

    # -- raw (undecoded) samples ------------------------------------------------------------
    def _read_shard(self, shard: ShardInfo) -> Iterator[dict]:
        import webdataset as wds

        path = self.split_dir / shard.name

        def reraise(error: Exception) -> bool:
            raise error

        try:
            yield from wds.tarfile_samples([{"url": str(path)}], handler=reraise)
        except Exception as error:
            message = f"shard {path} is corrupt or truncated ({type(error).__name__}: {str(error)[:120]})"
            if not self.skip_corrupt:
                raise ShardError(
                    f"{message}; rebuild it (python -m data_prep shards) or set data.skip_corrupt=true"
                ) from None
            if not any(str(path) in entry for entry in self.skipped):  # one entry per shard
                self.skipped.append(message)
            warnings.warn(f"skipping: {message} ({len(self.skipped)} shards skipped so far)", stacklevel=2)

    def _kept(self, samples: Iterator[dict]) -> Iterator[dict]:
        if self.held is None:
            yield from samples
            return
        for sample in samples:
            if (int(sample["__key__"]) in self.held) == self.keep_held:
                yield sample

    def _pass(self, order: list[int]) -> Iterator[dict]:
        shards = [self.shards[i] for i in order]
        if len(shards) >= self.world_size:
            for shard in shards[self.rank :: self.world_size]:
                yield from self._kept(self._read_shard(shard))
        else:
            index = 0
            for shard in shards:
                for sample in self._kept(self._read_shard(shard)):
                    if index % self.world_size == self.rank:
                        yield sample
                    index += 1

    def _training_samples(self) -> Iterator[dict]:
        generator = np.random.default_rng([self.seed, self.epoch, self.rank])
        buffer: list[dict] = []
        for pass_index in range(sys.maxsize):
            order = np.random.default_rng([self.seed, self.epoch, pass_index]).permutation(len(self.shards))
            produced = 0
            for sample in self._pass(order.tolist()):
                produced += 1
                if len(buffer) < self.shuffle_buffer:
                    buffer.append(sample)
                    continue
                slot = int(generator.integers(len(buffer)))
                buffer[slot], sample = sample, buffer[slot]
                yield sample
            if produced == 0 and not buffer:
                raise ShardError(f"rank {self.rank} got no samples from {self.split_dir}")
            # flush the buffer in random order at the end of each pass
            while buffer:
                yield buffer.pop(int(generator.integers(len(buffer))))

    def _eval_samples(self) -> Iterator[dict]:
        index = 0
        for shard in self.shards:
            for sample in self._kept(self._read_shard(shard)):
                if index % self.world_size == self.rank:
                    yield sample
                index += 1

    def raw_batches(self) -> Iterator[list[dict]]:
        samples = self._training_samples() if self.training else self._eval_samples()
        batch: list[dict] = []
        emitted = 0
        for sample in samples:
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
                emitted += 1
                if emitted == self.batches_per_epoch:
                    return
        if batch and emitted < self.batches_per_epoch:
            yield batch

    # -- decoded batches --------------------------------------------------------------------
    def _collate(self, raw_batch: list[dict]) -> Batch:
        if self._tokenizer is None:
            from vdi.encoders import Tokenizer

            self._tokenizer = Tokenizer(self.clip_name, self.clip_config_dir)
        samples = [decode_sample(raw, self.load_patches) for raw in raw_batch]
        return collate(samples, self._tokenizer, self.num_pre_clips, self.load_patches)

    def __iter__(self) -> Iterator[Batch]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for index, raw_batch in enumerate(self.raw_batches()):
            if index < self.start_batch or (index - self.start_batch) % workers != worker:
                continue
            yield self._collate(raw_batch)


def split_source(data_cfg, split: str) -> dict:
    """Where a split's videos come from: its own shard folder, or, for ``data.val_split`` with
    ``data.val_fraction`` > 0, the seeded hold-out of the training split (ShardStream keywords)."""
    root = Path(data_cfg.shard_root)
    if data_cfg.val_fraction > 0 and split in (data_cfg.val_split, data_cfg.train_split):
        if split == data_cfg.val_split and (root / split).exists():
            raise ShardError(
                f"{root / split} exists and data.val_fraction={data_cfg.val_fraction} would also make a "
                f"'{split}' split from the training videos: set data.val_fraction=0 or data.val_split to another name"
            )
        part = "held" if split == data_cfg.val_split else "rest"
        return {
            "split_dir": root / data_cfg.train_split,
            "hold_out": (data_cfg.val_fraction, data_cfg.val_seed),
            "hold_out_part": part,
        }
    return {"split_dir": root / split}


def held_out_keys(num_videos: int, fraction: float, seed: int) -> frozenset[int]:
    """Sample keys (running video indices of a split) of a seeded hold-out of ``fraction`` of the videos."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"hold-out fraction must be in (0, 1), got {fraction}")
    count = max(1, round(num_videos * fraction))
    return frozenset(np.random.default_rng([seed, 0x7A1]).permutation(num_videos)[:count].tolist())


def make_loader(stream: ShardStream, num_workers: int) -> DataLoader:
    """A DataLoader over a stream; workers are started per epoch (the stream's epoch is copied in)."""
    return DataLoader(
        stream,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=False,
        prefetch_factor=2 if num_workers > 0 else None,
        # fork keeps worker start-up cheap on Linux; the stream holds no threads or CUDA state.
        multiprocessing_context="fork" if num_workers > 0 and os.name == "posix" else None,
    )


__all__ = [
    "LoaderState",
    "ShardStream",
    "check_manifest_totals",
    "content_hash",
    "held_out_keys",
    "make_loader",
    "split_source",
]
