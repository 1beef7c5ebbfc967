"""Annotations + extracted features -> WebDataset shards of one split, with a manifest, written
by :class:`vdi.data.writer.SplitWriter`.

The split is written into ``<out>/<split>.tmp`` and moved to ``<out>/<split>`` only when every
shard and the manifest are complete, so an interrupted build never leaves shards a loader would
pick up. Queries are parsed (Q^s / Q^d) once here.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from data_prep.annotations import HygieneReport, VideoRecord, apply_durations
from data_prep.features import FeatureError, load_features, read_spec
from vdi.data.format import EncoderInfo, QueryRecord
from vdi.data.writer import DEFAULT_SHARD_BYTES, SplitWriter
from vdi.errors import InputError
from vdi.video import DURATION_TOLERANCE_FRACTION, DURATION_TOLERANCE_S, duration_mismatch


@dataclass
class ShardSummary:
    split: str
    videos: int
    queries: int
    shards: int
    bytes: int
    missing_features: int
    seconds: float
    damaged_features: int = 0
    duration_mismatches: int = 0

    def line(self) -> str:
        damaged = f", {self.damaged_features} damaged feature files skipped" if self.damaged_features else ""
        mismatched = (
            f", {self.duration_mismatches} annotated durations replaced by the decoded one"
            if self.duration_mismatches
            else ""
        )
        return (
            f"shards {self.split}: {self.videos} videos, {self.queries} queries in {self.shards} shard(s), "
            f"{self.bytes / 2**20:.1f} MiB, {self.missing_features} videos without features skipped{damaged}"
            f"{mismatched}, {self.seconds:.1f} s"
        )


def build_split(
    dataset: str,
    split: str,
    records: list[VideoRecord],
    features_dir: str | Path,
    out_root: str | Path,
    hygiene: list[str] | None = None,
    shard_bytes: int = DEFAULT_SHARD_BYTES,
    include_patches: bool = True,
    spacy_model: str = "en_core_web_sm",
    parser=None,
    verbose: bool = True,
) -> ShardSummary:
    from vdi.text import QueryParser

    start = time.perf_counter()
    spec = read_spec(features_dir)
    include_patches = include_patches and spec.num_patches > 0
    # durations: the annotation's when it has one and it agrees with the decoded video's (the
    # features' timeline), else the decoded one; a disagreement is reported
    available, durations, missing = [], {}, 0
    damaged: list[str] = []
    mismatched: list[tuple[str, float, float]] = []
    for record in records:
        try:
            stored = load_features(features_dir, record.video_id, load_patches=False)
        except FeatureError as error:
            damaged.append(str(error))
            continue
        if stored is None:
            missing += 1
            continue
        available.append(record)
        decoded = stored["duration"]
        if record.duration is not None and duration_mismatch(record.duration, decoded):
            mismatched.append((record.video_id, record.duration, decoded))
            durations[record.video_id] = decoded
        else:
            durations[record.video_id] = record.duration if record.duration is not None else decoded
    kept, report = apply_durations(available, durations, f"{split} durations")
    if not kept:
        raise InputError(
            f"split {split}: none of its {len(records)} videos has usable features in {features_dir} "
            "(extract them first: python -m data_prep features)"
        )
    lines = list(hygiene or [])
    notes = []
    if mismatched:
        examples = "; ".join(f"{v}: annotated {a:.2f} s, decoded {d:.2f} s" for v, a, d in mismatched[:3])
        notes.append(
            f"{split} durations: {len(mismatched)} annotated durations differ from the decoded video's by more than "
            f"max({DURATION_TOLERANCE_S:g} s, {DURATION_TOLERANCE_FRACTION:.0%}); the decoded duration was used "
            f"({examples})"
        )
    if report.read and (report.fixed or report.dropped):
        notes.append(report.line())
    for note in notes:
        lines.append(note)
        if verbose:
            print(note)
    parser = parser or QueryParser(spacy_model)
    sentences = [moment.sentence for record in kept for moment in record.moments]
    parsed = iter(parser.parse(sentences))
    out_root = Path(out_root)
    temporary = out_root / f"{split}.tmp"
    final = out_root / split
    shutil.rmtree(temporary, ignore_errors=True)
    with SplitWriter(temporary, fps=spec.fps, shard_bytes=shard_bytes) as writer:
        for record in kept:
            try:
                stored = load_features(features_dir, record.video_id, load_patches=include_patches)
            except FeatureError as error:  # damaged past its zip directory (e.g. in the patch tokens)
                damaged.append(str(error))
                for _ in record.moments:
                    next(parsed)
                continue
            assert stored is not None
            queries = []
            for moment in record.moments:
                item = next(parsed)
                queries.append(
                    QueryRecord(item.query, item.static, item.dynamic, moment.start, moment.end, moment.extra)
                )
            patches = stored.get("patches") if include_patches else None
            writer.write(record.video_id, record.duration, stored["features"], patches, queries)
    if damaged:
        note = f"{split} features: {len(damaged)} damaged feature files skipped (first: {damaged[0]})"
        lines.append(note)
        if verbose:
            print(note)
    if writer.num_videos == 0:
        raise InputError(f"split {split}: every feature file in {features_dir} is damaged; extract them again")
    manifest = writer.write_manifest(
        dataset=dataset,
        split=split,
        encoder=EncoderInfo(spec.encoder, spec.weights),
        feature_dim=spec.feature_dim,
        num_patches=spec.num_patches if include_patches else 0,
        patch_clips=spec.patch_clips if include_patches else 0,
        hygiene=lines,
        created=time.strftime("%Y-%m-%dT%H:%M:%S"),
        max_duration=max(float(r.duration) for r in kept),
    )
    shutil.rmtree(final, ignore_errors=True)
    temporary.replace(final)
    summary = ShardSummary(
        split,
        manifest.num_videos,
        manifest.num_queries,
        len(manifest.shards),
        sum(i.bytes for i in manifest.shards),
        missing,
        time.perf_counter() - start,
        damaged_features=len(damaged),
        duration_mismatches=len(mismatched),
    )
    if verbose:
        print(summary.line())
    return summary


def verify_split(split_dir: str | Path) -> list[str]:
    """Problems found when re-hashing every shard against the manifest (the loader's check,
    :func:`vdi.data.format.check_shard`) and counting its videos and queries (empty = verified)."""
    import json

    import webdataset as wds

    from vdi.data.format import check_shard, listed_totals_mismatch, read_manifest

    split_dir = Path(split_dir)
    manifest = read_manifest(split_dir)
    problems = []
    listed = listed_totals_mismatch(manifest)
    if listed is not None:
        problems.append(
            f"{split_dir / 'manifest.json'}: says {manifest.num_videos} videos / {manifest.num_queries} queries, "
            f"its shard list {listed[0]} / {listed[1]}"
        )
    for shard in manifest.shards:
        path = split_dir / shard.name
        fault = check_shard(path, shard)  # every time from the file: no per-process hash cache here
        if fault is not None:
            if fault.kind == "missing":
                problems.append(f"{path}: missing")
            elif fault.kind == "size":
                problems.append(f"{path}: {fault.size} bytes, manifest says {shard.bytes}")
            else:
                problems.append(f"{path}: sha256 differs from the manifest")
            continue
        videos = queries = 0
        try:
            for sample in wds.tarfile_samples([{"url": str(path)}]):
                videos += 1
                queries += len(json.loads(sample["meta.json"])["queries"])
        except Exception as error:
            problems.append(f"{path}: unreadable ({type(error).__name__}: {error})")
            continue
        if (videos, queries) != (shard.num_videos, shard.num_queries):
            problems.append(
                f"{path}: holds {videos} videos / {queries} queries, manifest says "
                f"{shard.num_videos} / {shard.num_queries}"
            )
    return problems


__all__ = ["DEFAULT_SHARD_BYTES", "HygieneReport", "ShardSummary", "build_split", "verify_split"]
