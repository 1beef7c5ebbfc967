"""Video decoding with PyAV at a fixed sampling rate.

Frame k of the output is the source frame shown at time ``k / fps`` (the latest frame whose
timestamp is <= that time), for k = 0 .. ceil(duration * fps) - 1, so features line up with
seconds whatever the source frame rate. Frames are scaled by FFmpeg (swscale) so their short
side is ``short_side`` pixels, which keeps memory and the later resize cheap.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vdi.errors import UserError

VIDEO_SUFFIXES = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v")


class VideoDecodeError(UserError, RuntimeError):
    """A video that cannot be used: missing, undecodable, or zero-length."""


@dataclass
class DecodedVideo:
    frames: np.ndarray  # [T, H, W, 3] uint8 at the sampling rate
    duration: float  # seconds
    fps: float  # sampling rate of ``frames``
    # what the container says (None when it says nothing); a decoded duration well short of it
    # means a truncated or damaged file (see :func:`duration_mismatch`)
    declared: float | None = None


# A decoded video this much shorter than its container's (or its annotation's) duration is
# reported: the larger of an absolute and a relative tolerance, so that codec padding and
# rounding of long videos are not flagged.
DURATION_TOLERANCE_S = 1.0
DURATION_TOLERANCE_FRACTION = 0.05


def duration_mismatch(expected: float, decoded: float) -> bool:
    """True when ``decoded`` differs from ``expected`` by more than the tolerance."""
    return abs(expected - decoded) > max(DURATION_TOLERANCE_S, DURATION_TOLERANCE_FRACTION * expected)


def _scaled_size(width: int, height: int, short_side: int | None) -> tuple[int, int]:
    if not short_side:
        return width, height
    scale = short_side / min(width, height)
    # even sizes keep every pixel format's chroma planes whole
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def decode_video(path: str | Path, fps: float, short_side: int | None = 224) -> DecodedVideo:
    import av
    from av.video.reformatter import VideoReformatter

    path = Path(path)
    if not path.is_file():
        raise VideoDecodeError(f"{path}: file not found")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as error:
        raise VideoDecodeError(f"{path}: cannot open ({error})") from None
    try:
        if not container.streams.video:
            raise VideoDecodeError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = _scaled_size(stream.codec_context.width, stream.codec_context.height, short_side)
        # one reformatter for the whole video: frame.to_ndarray(width=, height=) builds a new
        # swscale context per frame, which cost 15x the decoding itself on 64x64 frames (the
        # same pixels either way: tests/test_video.py)
        reformatter = VideoReformatter()

        def to_array(frame) -> np.ndarray:
            return reformatter.reformat(frame, width=width, height=height, format="rgb24").to_ndarray()

        frames: list[np.ndarray] = []
        previous = None  # the latest decoded frame, converted to an array only when sampled
        previous_array: np.ndarray | None = None
        last_time = 0.0
        try:
            for frame in container.decode(stream):
                time = float(frame.time) if frame.time is not None else last_time
                # every sample time before this frame shows the previous frame
                while previous is not None and len(frames) / fps < time - 1e-9:
                    if previous_array is None:
                        previous_array = to_array(previous)
                    frames.append(previous_array)
                previous, previous_array, last_time = frame, None, time
        except av.error.FFmpegError as error:
            if previous is None:
                raise VideoDecodeError(f"{path}: undecodable ({error})") from None
            # a broken tail: keep what decoded; the duration ends at the last good frame
        if previous is None:
            raise VideoDecodeError(f"{path}: no decodable frame")
        rate = float(stream.average_rate) if stream.average_rate else fps
        decoded_end = last_time + 1.0 / rate
        declared = None
        if stream.duration is not None and stream.time_base is not None:
            declared = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            declared = container.duration / 1_000_000
        duration = min(declared, decoded_end) if declared and declared > 0 else decoded_end
        if duration <= 0:
            raise VideoDecodeError(f"{path}: zero-length video")
        total = max(1, math.ceil(duration * fps - 1e-9))
        if len(frames) < total:
            last_array = to_array(previous)
            frames.extend([last_array] * (total - len(frames)))
        return DecodedVideo(np.stack(frames[:total]), duration, fps, declared if declared and declared > 0 else None)
    finally:
        container.close()


def find_video(folder: str | Path, video_id: str) -> Path | None:
    """The file of a video id in a folder: <id>.<ext>, also without ActivityNet's 'v_' prefix."""
    folder = Path(folder)
    names = [video_id]
    if video_id.startswith("v_"):
        names.append(video_id[2:])
    for name in names:
        for suffix in VIDEO_SUFFIXES:
            candidate = folder / f"{name}{suffix}"
            if candidate.is_file():
                return candidate
    return None


__all__ = [
    "DURATION_TOLERANCE_FRACTION",
    "DURATION_TOLERANCE_S",
    "VIDEO_SUFFIXES",
    "DecodedVideo",
    "VideoDecodeError",
    "decode_video",
    "duration_mismatch",
    "find_video",
]
