"""vdi.video.decode_video: which source frame each sample shows, and its pixels."""

import numpy as np
import pytest

from data_prep.synthetic.world import write_video
from vdi.video import decode_video


def _noise_video(path, frames: int, height: int, width: int, fps: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)
    write_video(path, pixels, fps=fps)
    return pixels


@pytest.mark.parametrize("short_side", [None, 32])
def test_pixels_equal_pyav_per_frame_conversion(tmp_path, short_side):
    """One reformatter per video gives the pixels of PyAV's own per-frame conversion (the path
    the features of the frozen benchmark were made with), scaled or not."""
    import av

    _noise_video(tmp_path / "v.mp4", frames=12, height=48, width=80, fps=8)
    decoded = decode_video(tmp_path / "v.mp4", fps=8, short_side=short_side)
    width, height = (80, 48) if short_side is None else (54, 32)
    with av.open(str(tmp_path / "v.mp4")) as container:
        expected = np.stack(
            [f.to_ndarray(format="rgb24", width=width, height=height) for f in container.decode(video=0)]
        )
    assert decoded.frames.shape == (12, height, width, 3)
    assert np.array_equal(decoded.frames, expected)


def test_sample_k_shows_the_latest_source_frame_at_k_over_fps(tmp_path):
    """8 fps source sampled at 4 fps keeps every other frame; at 3 fps, the frames shown at 0, 1/3, 2/3, ... s."""
    _noise_video(tmp_path / "v.mp4", frames=16, height=32, width=32, fps=8)
    full = decode_video(tmp_path / "v.mp4", fps=8, short_side=None).frames
    assert full.shape[0] == 16
    half = decode_video(tmp_path / "v.mp4", fps=4, short_side=None).frames
    assert np.array_equal(half, full[::2])
    third = decode_video(tmp_path / "v.mp4", fps=3, short_side=None).frames
    assert np.array_equal(third, full[[0, 2, 5, 8, 10, 13]])
