"""The errors a user can fix (bad config, missing data or model, bad input): command-line entry
points print them as one line and exit 2; anything else is a bug and keeps its traceback."""

from __future__ import annotations


def user_errors() -> tuple[type[BaseException], ...]:
    # imported lazily: each lives next to the code that raises it
    from vdi.config import ConfigError
    from vdi.encoders import ModelMissing
    from vdi.shards import ShardError
    from vdi.text import QueryError, SpacyModelMissing
    from vdi.video import VideoDecodeError

    return (
        ConfigError,
        ModelMissing,
        ShardError,
        QueryError,
        SpacyModelMissing,
        VideoDecodeError,
        FileNotFoundError,
        ValueError,  # e.g. a checkpoint of another format (vdi.checkpoint)
    )
