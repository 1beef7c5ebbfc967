"""Annotation readers: Charades-STA text, ActivityNet-Captions JSON, Charades-CG / ActivityNet-CG
JSON and a JSONL format for your own data, all returning :class:`VideoRecord` lists.

Hygiene is reported, never silent. Every reader applies the same rules and prints one summary
line (read / kept / fixed / dropped, by reason):

=====================  ========================================================
problem                action
=====================  ========================================================
start > end            swapped (fixed): the annotator typed the two times in the wrong order
start == end           dropped: a zero-length moment has IoU 0 with everything
end > duration         clipped to the duration (fixed)
start >= duration      dropped: the moment lies outside the video
negative start         clipped to 0 (fixed)
spaces around text     stripped (fixed)
empty sentence         dropped
=====================  ========================================================

Charades-STA's text files carry no durations: its records get ``duration=None`` and the
duration rules run again when the duration is known (from the decoded video, at shard time),
with their own summary line.

**Your own data (JSONL)**: one JSON object per line, one line per video::

    {"video": "cooking_01", "duration": 95.2, "moments": [
        {"start": 3.5, "end": 11.0, "sentence": "a man cracks two eggs into a bowl"},
        {"start": 40.0, "end": 52.5, "sentence": "he pours the batter into the pan"}]}

``duration`` may be omitted (taken from the video); ``path`` may name the video file.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from vdi.errors import UserError


class AnnotationError(UserError, ValueError):
    """An annotation file that cannot be read; the message names the file and line."""


@dataclass
class Moment:
    start: float
    end: float
    sentence: str
    # Per-query extra fields kept from the source (CG splits: "news" / "novels").
    extra: dict = field(default_factory=dict)


@dataclass
class VideoRecord:
    video_id: str
    duration: float | None
    moments: list[Moment]
    path: str | None = None


@dataclass
class HygieneReport:
    source: str
    read: int = 0
    kept: int = 0
    fixed: Counter = field(default_factory=Counter)
    dropped: Counter = field(default_factory=Counter)

    def line(self) -> str:
        def show(counter: Counter) -> str:
            return ", ".join(f"{reason} {count}" for reason, count in sorted(counter.items())) or "none"

        return (
            f"{self.source}: read {self.read}, kept {self.kept}, "
            f"fixed {sum(self.fixed.values())} ({show(self.fixed)}), "
            f"dropped {sum(self.dropped.values())} ({show(self.dropped)})"
        )


def clean_moment(
    start: float, end: float, sentence: str, duration: float | None, report: HygieneReport
) -> Moment | None:
    """Apply the hygiene rules to one moment; count what was fixed or dropped."""
    report.read += 1
    stripped = sentence.strip()
    if stripped != sentence:
        report.fixed["spaces stripped"] += 1
    if not stripped:
        report.dropped["empty sentence"] += 1
        return None
    if not (math.isfinite(start) and math.isfinite(end)):
        report.dropped["non-finite start/end"] += 1
        return None
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        report.dropped["non-finite or non-positive duration"] += 1
        return None
    if start > end:
        start, end = end, start
        report.fixed["start > end swapped"] += 1
    if start == end:
        report.dropped["start == end"] += 1
        return None
    if start < 0:
        start = 0.0
        report.fixed["negative start clipped"] += 1
    moment = Moment(float(start), float(end), stripped)
    if duration is not None:
        moment = clip_to_duration(moment, duration, report)
        if moment is None:
            return None
    report.kept += 1
    return moment


def clip_to_duration(moment: Moment, duration: float, report: HygieneReport) -> Moment | None:
    if moment.start >= duration:
        report.dropped["start >= duration"] += 1
        return None
    if moment.end > duration:
        report.fixed["end > duration clipped"] += 1
        moment = Moment(moment.start, float(duration), moment.sentence, moment.extra)
    return moment


def apply_durations(
    records: list[VideoRecord], durations: dict[str, float], source: str
) -> tuple[list[VideoRecord], HygieneReport]:
    """Fill in durations (e.g. from decoded videos) and clip / drop moments against them."""
    report = HygieneReport(source)
    result = []
    for record in records:
        duration = durations.get(record.video_id, record.duration)
        if duration is None:
            report.read += len(record.moments)
            report.dropped["video without duration"] += len(record.moments)
            continue
        kept = []
        for moment in record.moments:
            report.read += 1
            clipped = clip_to_duration(moment, duration, report)
            if clipped is not None:
                report.kept += 1
                kept.append(clipped)
        if kept:
            result.append(VideoRecord(record.video_id, float(duration), kept, record.path))
    return result, report


def _group(items: Iterable[tuple[str, float | None, Moment, str | None]]) -> list[VideoRecord]:
    records: dict[str, VideoRecord] = {}
    for video_id, duration, moment, path in items:
        record = records.get(video_id)
        if record is None:
            record = records[video_id] = VideoRecord(video_id, duration, [], path)
        record.moments.append(moment)
    return [r for r in records.values() if r.moments]


@dataclass
class Annotations:
    """What a reader returns: the cleaned records and the hygiene report."""

    records: list[VideoRecord]
    report: HygieneReport

    @property
    def num_queries(self) -> int:
        return sum(len(r.moments) for r in self.records)


def _finish(report: HygieneReport, records: list[VideoRecord], verbose: bool) -> Annotations:
    if verbose:
        print(report.line())
    return Annotations(records, report)


def read_charades_sta(path: str | Path, verbose: bool = True) -> Annotations:
    """``VID start end##sentence`` per line (2D-TAN's copy). Durations are unknown (None)."""
    path = Path(path)
    report = HygieneReport(f"{path.parent.name}/{path.name}")
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        head, separator, sentence = line.partition("##")
        parts = head.split()
        if not separator or len(parts) != 3:
            raise AnnotationError(f"{path}:{number}: expected 'VID start end##sentence', got {line[:80]!r}")
        try:
            start, end = float(parts[1]), float(parts[2])
        except ValueError:
            raise AnnotationError(f"{path}:{number}: start/end are not numbers: {line[:80]!r}") from None
        moment = clean_moment(start, end, sentence, None, report)
        if moment is not None:
            items.append((parts[0], None, moment, None))
    return _finish(report, _group(items), verbose)


def read_activitynet_json(path: str | Path, verbose: bool = True) -> Annotations:
    """``{vid: {duration, timestamps: [[s, e], ...], sentences: [...]}}``: ActivityNet Captions
    (train / val_1 / val_2; MMN's train / val / test) and the CG splits (Li et al. 2022), whose
    per-sentence ``news`` (novel words) or ``novels`` (novel compositions) lists are kept in
    :attr:`Moment.extra`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected an object keyed by video id")
    report = HygieneReport(f"{path.parent.name}/{path.name}")
    records = []
    for video_id, entry in data.items():
        try:
            duration = float(entry["duration"])
            timestamps, sentences = entry["timestamps"], entry["sentences"]
        except (KeyError, TypeError, ValueError):
            raise AnnotationError(f"{path}: video {video_id} lacks duration / timestamps / sentences") from None
        if len(timestamps) != len(sentences):
            raise AnnotationError(
                f"{path}: video {video_id} has {len(timestamps)} timestamps, {len(sentences)} sentences"
            )
        extras = {key: entry[key] for key in ("news", "novels") if key in entry}
        moments = []
        for index, ((start, end), sentence) in enumerate(zip(timestamps, sentences)):
            moment = clean_moment(float(start), float(end), str(sentence), duration, report)
            if moment is not None:
                moment.extra = {key: values[index] for key, values in extras.items() if index < len(values)}
                moments.append(moment)
        if moments:
            records.append(VideoRecord(str(video_id), duration, moments))
    return _finish(report, records, verbose)


def read_jsonl(path: str | Path, verbose: bool = True) -> Annotations:
    """The documented JSONL format for a user's own dataset (see the module docstring)."""
    path = Path(path)
    report = HygieneReport(f"{path.parent.name}/{path.name}")
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            video_id = str(entry["video"])
            duration = float(entry["duration"]) if entry.get("duration") is not None else None
            raw_moments = entry["moments"]
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as error:
            raise AnnotationError(
                f'{path}:{number}: expected {{"video": ..., "duration": ..., "moments": [...]}} ({error})'
            ) from None
        moments = []
        for raw in raw_moments:
            try:
                start, end, sentence = float(raw["start"]), float(raw["end"]), str(raw["sentence"])
            except (KeyError, TypeError, ValueError):
                raise AnnotationError(f"{path}:{number}: a moment needs start, end and sentence") from None
            moment = clean_moment(start, end, sentence, duration, report)
            if moment is not None:
                moments.append(moment)
        if moments:
            records.append(VideoRecord(video_id, duration, moments, entry.get("path")))
    return _finish(report, records, verbose)


# dataset -> split -> (reader, file name relative to the dataset's annotation folder)
DATASET_SPLITS: dict[str, dict[str, str]] = {
    "charades_sta": {"train": "charades_sta_train.txt", "test": "charades_sta_test.txt"},
    "activitynet_captions": {"train": "train.json", "val": "val.json", "test": "test.json"},
    "charades_cg": {
        "train": "train.json",
        "test_trivial": "test_trivial.json",
        "novel_composition": "novel_composition.json",
        "novel_word": "novel_word.json",
    },
    "activitynet_cg": {
        "train": "train.json",
        "test_trivial": "test_trivial.json",
        "novel_composition": "novel_composition.json",
        "novel_word": "novel_word.json",
    },
}
DATASET_ALIASES = {"activitynet": "activitynet_captions"}


def read_annotation_file(path: str | Path, verbose: bool = True) -> Annotations:
    """Pick the reader by file type: .txt (Charades-STA), .json (ActivityNet / CG), .jsonl (own)."""
    path = Path(path)
    if not path.exists():
        raise AnnotationError(f"annotation file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return read_charades_sta(path, verbose)
    if suffix == ".json":
        return read_activitynet_json(path, verbose)
    if suffix == ".jsonl":
        return read_jsonl(path, verbose)
    raise AnnotationError(f"{path}: unknown annotation format (expected .txt, .json or .jsonl)")


def read_split(dataset: str, split: str, folder: str | Path, verbose: bool = True) -> Annotations:
    dataset = DATASET_ALIASES.get(dataset, dataset)
    if dataset not in DATASET_SPLITS:
        raise AnnotationError(f"unknown dataset '{dataset}'; known: {', '.join(DATASET_SPLITS)}")
    splits = DATASET_SPLITS[dataset]
    if split not in splits:
        raise AnnotationError(f"dataset {dataset} has no split '{split}'; splits: {', '.join(splits)}")
    return read_annotation_file(Path(folder) / splits[split], verbose)


__all__ = [
    "DATASET_SPLITS",
    "AnnotationError",
    "Annotations",
    "HygieneReport",
    "Moment",
    "VideoRecord",
    "apply_durations",
    "clean_moment",
    "read_activitynet_json",
    "read_annotation_file",
    "read_charades_sta",
    "read_jsonl",
    "read_split",
]
