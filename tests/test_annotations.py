"""Annotation readers: real benchmark counts (when ../shared/data/annotations exists) and hygiene."""

import json

import pytest

from data_prep.annotations import AnnotationError, apply_durations, read_annotation_file, read_split
from data_prep.download import SOURCES, ChecksumMismatch, download
from vdi.errors import InputError


def test_charades_sta_train_counts(annotations_dir):
    read = read_split("charades_sta", "train", annotations_dir / "charades_sta", verbose=False)
    assert read.report.read == 12408
    assert read.report.fixed["start > end swapped"] == 4
    assert read.num_queries == 12408
    assert all(m.start < m.end for r in read.records for m in r.moments)
    assert all(r.duration is None for r in read.records)  # the text format has no durations
    test = read_split("charades_sta", "test", annotations_dir / "charades_sta", verbose=False)
    assert test.report.read == 3720 and test.num_queries == 3720


def test_activitynet_counts_and_spaces(annotations_dir):
    folder = annotations_dir / "activitynet_captions"
    counts = {split: read_split("activitynet", split, folder, verbose=False) for split in ("train", "val", "test")}
    assert [counts[s].report.read for s in ("train", "val", "test")] == [37421, 17505, 17031]
    assert counts["val"].report.fixed["spaces stripped"] > 0
    assert all(m.sentence == m.sentence.strip() for r in counts["val"].records for m in r.moments)
    assert all(m.end <= r.duration for r in counts["test"].records for m in r.moments)


def test_charades_cg_counts_and_extra_fields(annotations_dir):
    folder = annotations_dir / "charades_cg"
    train = read_split("charades_cg", "train", folder, verbose=False)
    assert train.report.read == 8281
    assert train.report.fixed["end > duration clipped"] == 1255
    novel_word = read_split("charades_cg", "novel_word", folder, verbose=False)
    assert novel_word.num_queries == 695
    assert all("news" in m.extra for r in novel_word.records for m in r.moments)
    novel_composition = read_split("charades_cg", "novel_composition", folder, verbose=False)
    assert all("novels" in m.extra for r in novel_composition.records for m in r.moments)


def test_activitynet_cg_counts(annotations_dir):
    folder = annotations_dir / "activitynet_cg"
    train = read_split("activitynet_cg", "train", folder, verbose=False)
    assert train.report.read == 36724
    bad = train.report.fixed["start > end swapped"] + train.report.dropped["start == end"]
    assert bad == 4  # 4 queries with start >= end
    assert read_split("activitynet_cg", "novel_word", folder, verbose=False).num_queries == 3920


def test_hygiene_rules_are_counted(tmp_path, capsys):
    path = tmp_path / "mine.jsonl"
    lines = [
        {
            "video": "a",
            "duration": 10.0,
            "moments": [
                {"start": 5, "end": 2, "sentence": "a man jumps"},
                {"start": 3, "end": 3, "sentence": "a man sits"},
                {"start": 8, "end": 12, "sentence": "  a man runs  "},
                {"start": 11, "end": 12, "sentence": "too late"},
                {"start": 1, "end": 2, "sentence": "   "},
            ],
        },
        {"video": "b", "moments": [{"start": 0, "end": 4, "sentence": "a dog barks"}]},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines))
    read = read_annotation_file(path)
    out = capsys.readouterr().out
    assert "read 6, kept 3" in out and "dropped 3" in out
    report = read.report
    assert report.fixed["start > end swapped"] == 1
    assert report.fixed["end > duration clipped"] == 1
    assert report.fixed["spaces stripped"] == 2
    assert report.dropped == {"start == end": 1, "start >= duration": 1, "empty sentence": 1}
    a = read.records[0]
    assert [(m.start, m.end, m.sentence) for m in a.moments] == [(2.0, 5.0, "a man jumps"), (8.0, 10.0, "a man runs")]
    # b has no duration: the duration rules run later, when the video is decoded
    records, later = apply_durations(read.records, {"b": 3.0}, "durations")
    assert records[1].moments[0].end == 3.0 and later.fixed["end > duration clipped"] == 1


def test_malformed_lines_are_dropped_and_counted_with_their_place(tmp_path, capsys):
    """The same rule in every reader: a bad line or entry is dropped and counted with its line
    number or video id; a file that keeps nothing, or is not UTF-8 / JSON, is refused naming it."""
    bad = tmp_path / "bad.txt"
    bad.write_text("AO8RW 0.0 6.9##fine\nAO8RW zero 6.9##broken\nno separator here\n")
    read = read_annotation_file(bad)
    assert read.num_queries == 1 and read.report.dropped["unparsable lines"] == 2
    assert "unparsable lines 2 (e.g. line 2, line 3)" in capsys.readouterr().out
    anet = tmp_path / "anet.json"
    entry = {"duration": 10.0, "timestamps": [["a", 2], [None, 3], [1, 4]], "sentences": ["x", "y", "a man runs"]}
    anet.write_text(json.dumps({"v_ok": entry, "v_bad": {"duration": 5}, "v_nan": {**entry, "duration": "nan"}}))
    read = read_annotation_file(anet)
    assert read.num_queries == 1 and read.report.dropped["unparsable timestamps"] == 2
    line = read.report.line()
    assert "video v_ok sentence 0" in line and "video v_bad" in line
    assert read.report.dropped["non-finite or non-positive duration"] == 3
    own = tmp_path / "own.jsonl"
    own.write_text('{"video": "a", "moments": [{"start": 0, "end": 1, "sentence": "a cat"}]}\n[1, 2]\nnot json\n')
    read = read_annotation_file(own)
    assert read.num_queries == 1 and "(e.g. line 2, line 3)" in read.report.line()
    empty = tmp_path / "empty.txt"
    empty.write_text("nothing useful\n")
    with pytest.raises(AnnotationError, match=r"empty.txt: no usable annotation"):
        read_annotation_file(empty)
    latin = tmp_path / "latin.txt"
    latin.write_bytes("AO8RW 0.0 6.9##a person opens the caf\u00e9 door\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin.txt is not UTF-8 text \(byte 0xe9 on line 1\)"):
        read_annotation_file(latin)
    with pytest.raises(AnnotationError, match="unknown annotation format"):
        (tmp_path / "x.csv").write_text("")
        read_annotation_file(tmp_path / "x.csv")


def test_download_verifies_checksums_offline(tmp_path, monkeypatch):
    import hashlib

    from data_prep import download as module

    good, evil = b"AO8RW 0.0 6.9##a person sits.\n", b"tampered\n"
    remote = module.RemoteFile("charades_sta_train.txt", "https://example.invalid/x", hashlib.sha256(good).hexdigest())
    monkeypatch.setitem(SOURCES, "charades_sta", [remote])
    served = {"content": good, "calls": 0}

    def fake_fetch(url, target, timeout):
        served["calls"] += 1
        target.write_bytes(served["content"])

    paths = download("charades_sta", tmp_path, fetch=fake_fetch)
    assert paths[0].read_bytes() == good and served["calls"] == 1
    download("charades_sta", tmp_path, fetch=fake_fetch)  # present and verified: not fetched again
    assert served["calls"] == 1
    paths[0].write_bytes(evil)
    served["content"] = evil
    with pytest.raises(ChecksumMismatch, match="does not match"):
        download("charades_sta", tmp_path, fetch=fake_fetch)
    assert not paths[0].exists()  # a bad download is never left behind


def test_non_finite_values_are_dropped_and_counted(tmp_path):
    from data_prep.annotations import read_charades_sta, read_jsonl

    (tmp_path / "a.txt").write_text("v1 nan 3.0##a person opens a door\nv1 1.0 3.0##a person sits\nv2 1 inf##x y\n")
    read = read_charades_sta(tmp_path / "a.txt", verbose=False)
    assert read.report.kept == 1 and read.report.dropped["non-finite start/end"] == 2
    (tmp_path / "b.jsonl").write_text(
        '{"video": "v1", "duration": NaN, "moments": [{"start": 1, "end": 2, "sentence": "a b"}]}\n'
        '{"video": "v2", "duration": 5, "moments": [{"start": 1, "end": 2, "sentence": "a b"}]}\n'
    )
    read = read_jsonl(tmp_path / "b.jsonl", verbose=False)
    assert [r.video_id for r in read.records] == ["v2"]
    assert read.report.dropped["non-finite or non-positive duration"] == 1
