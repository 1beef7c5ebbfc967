"""The demo page's logic (vdi/app.py) without a browser: the world's test videos as examples,
moments on the timeline inside the video, the encoded-video cache, one-line errors. The page in a
real browser is tests/test_browser.py's (integration)."""

import re

import pytest
from app_helpers import SENTENCES, VIDEO_SECONDS, tiny_world

from vdi.app import Demo, build_page, world_examples
from vdi.predict import Predictor


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    checkpoint = tiny_world(tmp_path_factory.mktemp("app"))
    predictor = Predictor.from_checkpoint(checkpoint)
    return Demo(predictor, max_seconds=30.0, examples=world_examples(predictor))


def test_examples_are_the_worlds_test_videos_with_their_sentences(demo):
    assert sorted(demo.examples) == [f"test: {video_id}" for video_id in sorted(VIDEO_SECONDS)]
    assert demo.examples["test: test_0000"].sentences == SENTENCES["test_0000"]


def test_moments_lie_inside_the_video_and_the_split_is_shown(demo):
    page, error = demo.handle("test: test_0001", None, "a red circle moves to the left\n\n  a blue star spins ", 3)
    assert error == ""
    bars = [(float(s), float(e)) for s, e in re.findall(r'data-start="([\d.]+)" data-end="([\d.]+)"', page)]
    assert len(bars) == 2 * 3  # two sentences (the blank line is dropped), three moments each
    assert all(0.0 <= start < end <= VIDEO_SECONDS["test_0001"] + 1e-6 for start, end in bars)
    assert "Q<sup>s</sup>: a red circle" in page and "Q<sup>d</sup>: moves to the left" in page
    assert '<video src="/gradio_api/file=' in page


def test_a_video_is_encoded_once_while_sentences_change(demo, monkeypatch):
    calls = []
    encode = demo.predictor.encode_video
    monkeypatch.setattr(demo.predictor, "encode_video", lambda path: calls.append(path) or encode(path))
    demo._cache.clear()
    first, _ = demo.handle("test: test_0000", None, "a blue star spins", 2)
    second, _ = demo.handle("test: test_0000", None, "a square grows\na blue star spins", 2)
    assert len(calls) == 1
    # the same sentence gets the same moments from the cached video
    assert re.findall(r'data-start="[^"]+"', first) == re.findall(r'data-start="[^"]+"', second)[2:]


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("empty sentence", "no sentence given"),
        ("undecodable upload", "cannot be decoded as a video"),
        ("too long", "over this page's limit of 5 s"),
        ("no video", "no video: pick a test video"),
    ],
)
def test_bad_input_is_one_readable_line(demo, tmp_path, case, expected):
    label, upload, text = "test: test_0000", None, "a blue star spins"
    if case == "empty sentence":
        text = " \n  "
    elif case == "undecodable upload":
        upload = tmp_path / "holiday.mp4"
        upload.write_bytes(b"this is not a video" * 100)
    elif case == "no video":
        label = None
    limit = demo.max_seconds
    demo.max_seconds = 5.0 if case == "too long" else limit
    demo._cache.clear()
    try:
        page, error = demo.handle(label, str(upload) if upload else None, text, 3)
    finally:
        demo.max_seconds = limit
    assert page == ""
    assert expected in error and "\n" not in error and "Traceback" not in error


def test_the_page_builds_with_its_controls(demo):
    page = build_page(demo)
    ids = {block.elem_id for block in page.blocks.values() if getattr(block, "elem_id", None)}
    assert {"vdi-video-choice", "vdi-upload", "vdi-sentences", "vdi-find", "vdi-answer", "vdi-error"} <= ids
