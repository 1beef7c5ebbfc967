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
non-finite value       dropped (nan / inf start, end or duration)
unparsable line/entry  dropped and counted with its line number or video id (a Charades line
                       without ``##``, a JSONL line that is not an object, an ActivityNet
                       timestamp like ``["a", 2]``); a file that is not UTF-8 or not JSON at
                       all, or keeps nothing, is refused naming the file
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

from vdi.errors import UserError, read_utf8


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
    # the first few places (line numbers, video ids) of each drop reason, for the summary line
    where: dict[str, list[str]] = field(default_factory=dict)

    def drop(self, reason: str, place: str, count: int = 1) -> None:
        self.dropped[reason] += count
        places = self.where.setdefault(reason, [])
        if len(places) < 3:
            places.append(place)

    def line(self) -> str:
        def show(counter: Counter) -> str:
            def entry(reason: str, count: int) -> str:
                places = self.where.get(reason)
                return f"{reason} {count}" + (f" (e.g. {', '.join(places)})" if places else "")

            return ", ".join(entry(reason, count) for reason, count in sorted(counter.items())) or "none"

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


def _finish(path: Path, report: HygieneReport, records: list[VideoRecord], verbose: bool) -> Annotations:
    if verbose:
        print(report.line())
    if not records:
        raise AnnotationError(f"{path}: no usable annotation ({report.line()}); check its format")
    return Annotations(records, report)


def _number(value) -> float:
    """A JSON number (or numeric string) as a float; ValueError for anything else (null, lists)."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def read_charades_sta(path: str | Path, verbose: bool = True) -> Annotations:
    """``VID start end##sentence`` per line (2D-TAN's copy). Durations are unknown (None)."""
    path = Path(path)
    report = HygieneReport(f"{path.parent.name}/{path.name}")
    items = []
    for number, line in enumerate(read_utf8(path, "annotation file").splitlines(), start=1):
        if not line.strip():
            continue
        head, separator, sentence = line.partition("##")
        parts = head.split()
        try:
            if not separator or len(parts) != 3:
                raise ValueError("not 'VID start end##sentence'")
            start, end = float(parts[1]), float(parts[2])
        except ValueError:
            report.read += 1
            report.drop("unparsable lines", f"line {number}")
            continue
        moment = clean_moment(start, end, sentence, None, report)
        if moment is not None:
            items.append((parts[0], None, moment, None))
    return _finish(path, report, _group(items), verbose)


def read_activitynet_json(path: str | Path, verbose: bool = True) -> Annotations:
    """``{vid: {duration, timestamps: [[s, e], ...], sentences: [...]}}``: ActivityNet Captions
    (train / val_1 / val_2; MMN's train / val / test) and the CG splits (Li et al. 2022), whose
    per-sentence ``news`` (novel words) or ``novels`` (novel compositions) lists are kept in
    :attr:`Moment.extra`."""
    path = Path(path)
    try:
        data = json.loads(read_utf8(path, "annotation file"))
    except json.JSONDecodeError as error:
        raise AnnotationError(f"{path} is not valid JSON: {error}") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"{path}: expected an object keyed by video id")
    report = HygieneReport(f"{path.parent.name}/{path.name}")
    records = []
    for video_id, entry in data.items():
        try:
            duration = _number(entry["duration"])
            timestamps, sentences = entry["timestamps"], entry["sentences"]
            if not isinstance(timestamps, list) or not isinstance(sentences, list):
                raise TypeError("timestamps and sentences must be lists")
            if len(timestamps) != len(sentences):
                raise ValueError(f"{len(timestamps)} timestamps, {len(sentences)} sentences")
        except (KeyError, TypeError, ValueError):
            report.read += 1
            report.drop("malformed video entries (no duration / timestamps / sentences lists)", f"video {video_id}")
            continue
        if not math.isfinite(duration) or duration <= 0:
            report.read += len(timestamps)
            report.drop("non-finite or non-positive duration", f"video {video_id}", len(timestamps))
            continue
        extras = {key: entry[key] for key in ("news", "novels") if key in entry}
        moments = []
        for index, (stamp, sentence) in enumerate(zip(timestamps, sentences)):
            try:
                start, end = (_number(value) for value in stamp)
            except (TypeError, ValueError):  # ["a", 2], [null, 3], [1], 5
                report.read += 1
                report.drop("unparsable timestamps", f"video {video_id} sentence {index}")
                continue
            moment = clean_moment(start, end, str(sentence), duration, report)
            if moment is not None:
                moment.extra = {key: values[index] for key, values in extras.items() if index < len(values)}
                moments.append(moment)
        if moments:
            records.append(VideoRecord(str(video_id), duration, moments))
    return _finish(path, report, records, verbose)


def read_jsonl(path: str | Path, verbose: bool = True) -> Annotations:
    """The documented JSONL format for a user's own dataset (see the module docstring)."""
    path = Path(path)
    report = HygieneReport(f"{path.parent.name}/{path.name}")
    records = []
    for number, line in enumerate(read_utf8(path, "annotation file").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            video_id = str(entry["video"])
            duration = _number(entry["duration"]) if entry.get("duration") is not None else None
            raw_moments = entry["moments"]
            if not isinstance(raw_moments, list):
                raise TypeError("moments must be a list")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
            report.read += 1
            report.drop('unparsable lines (not {"video", "moments": [...]})', f"line {number}")
            continue
        if duration is not None and (not math.isfinite(duration) or duration <= 0):
            report.read += len(raw_moments)
            report.drop("non-finite or non-positive duration", f"line {number}", len(raw_moments))
            continue
        moments = []
        for raw in raw_moments:
            try:
                start, end, sentence = _number(raw["start"]), _number(raw["end"]), str(raw["sentence"])
            except (KeyError, TypeError, ValueError):
                report.read += 1
                report.drop("moments without numeric start, end and a sentence", f"line {number}")
                continue
            moment = clean_moment(start, end, sentence, duration, report)
            if moment is not None:
                moments.append(moment)
        if moments:
            records.append(VideoRecord(video_id, duration, moments, entry.get("path")))
    return _finish(path, report, records, verbose)


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
