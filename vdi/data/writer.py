"""The one writer of the shard format (:mod:`vdi.data.format`): data_prep, the tests and the
benchmarks all write their splits through :class:`SplitWriter`.

Samples go to ``shard-000000.tar, shard-000001.tar, ...`` through ``webdataset.ShardWriter``
(a new shard starts once the current one holds ``shard_bytes`` of sample data or
``videos_per_shard`` videos); its ``post=`` hook records each closed shard's size and sha256,
and :meth:`SplitWriter.write_manifest` lists them in the split's manifest. Sample keys are the
running video index of the split.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vdi.data.format import (
    EncoderInfo,
    QueryRecord,
    ShardInfo,
    ShardManifest,
    encode_sample,
    sha256_file,
    write_manifest,
)

DEFAULT_SHARD_BYTES = 1 << 30  # about 1 GB per shard
SHARD_PATTERN = "shard-%06d.tar"


class SplitWriter:
    """Shards + manifest of one split in ``split_dir`` (created if needed; files already there
    with the same names are overwritten, others left alone).

    Use as a context manager around :meth:`write` (leaving it closes the last shard), then call
    :meth:`write_manifest`::

        with SplitWriter(split_dir, fps=2.0) as writer:
            writer.write(video_id, duration, features, patches, queries)
        manifest = writer.write_manifest(dataset="mine", split="train", encoder=..., feature_dim=512, num_patches=0)
    """

    def __init__(
        self,
        split_dir: str | Path,
        *,
        fps: float,
        shard_bytes: int = DEFAULT_SHARD_BYTES,
        videos_per_shard: int = 10**9,
    ):
        import webdataset as wds

        self.split_dir = Path(split_dir)
        self.split_dir.mkdir(parents=True, exist_ok=True)
        self.fps = fps
        self.num_videos = 0  # written so far: the next sample's key
        self.shards: list[ShardInfo] = []  # closed shards, in order
        self._counts: list[list[int]] = []  # per shard written to: videos, queries
        # ShardWriter opens shard 0 at once; verbose=0: it would print a line per shard
        self._writer = wds.ShardWriter(
            str(self.split_dir / SHARD_PATTERN),
            maxsize=shard_bytes,
            maxcount=videos_per_shard,
            post=self._shard_closed,
            verbose=0,
        )
        self._open = True

    def write(
        self,
        video_id: str,
        duration: float,
        features: np.ndarray,
        patches: np.ndarray | None,
        queries: list[QueryRecord],
    ) -> None:
        """Append one video (features [F, D], patches [F, P, D] or None) with its queries."""
        self._writer.write(encode_sample(self.num_videos, video_id, duration, self.fps, features, patches, queries))
        shard_index = self._writer.shard - 1  # ShardWriter.shard: the number of the next shard to open
        while len(self._counts) <= shard_index:
            self._counts.append([0, 0])
        self._counts[shard_index][0] += 1
        self._counts[shard_index][1] += len(queries)
        self.num_videos += 1

    def _shard_closed(self, name: str) -> None:
        index = len(self.shards)
        if index >= len(self._counts):  # the empty shard 0 of a split without videos: not listed
            return
        path = Path(name)
        videos, queries = self._counts[index]
        self.shards.append(ShardInfo(path.name, sha256_file(path), path.stat().st_size, videos, queries))

    def close(self) -> None:
        """Close the last shard (idempotent)."""
        if self._open:
            self._writer.close()
            self._open = False

    def __enter__(self) -> SplitWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def write_manifest(
        self,
        *,
        dataset: str,
        split: str,
        encoder: EncoderInfo,
        feature_dim: int,
        num_patches: int,
        hygiene: list[str] | None = None,
        created: str = "",
        max_duration: float = 0.0,
        patch_clips: int = 0,
    ) -> ShardManifest:
        """Close the shards and write ``manifest.json`` listing them; the counts, fps and shard
        list come from what was written."""
        self.close()
        manifest = ShardManifest(
            dataset=dataset,
            split=split,
            num_videos=sum(s.num_videos for s in self.shards),
            num_queries=sum(s.num_queries for s in self.shards),
            encoder=encoder,
            fps=self.fps,
            feature_dim=feature_dim,
            num_patches=num_patches,
            shards=list(self.shards),
            hygiene=list(hygiene or []),
            created=created,
            max_duration=max_duration,
            patch_clips=patch_clips,
        )
        write_manifest(self.split_dir, manifest)
        return manifest


__all__ = ["DEFAULT_SHARD_BYTES", "SHARD_PATTERN", "SplitWriter"]
