"""The errors a user can fix (bad config, missing data or model, bad input): command-line entry
points print them as one line and exit 2 (:func:`vdi.cli.run_cli`); anything else is a bug and
keeps its traceback.

Every such error derives from :class:`UserError`, raised where the cause is known; a bare
``ValueError`` from inside the library is a bug, not bad input, and is not caught here."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message names the thing and the fix."""


class InputError(UserError, ValueError):
    """Bad input or arguments (a ValueError too, for callers that catch that)."""


def read_utf8(path, what: str) -> str:
    """A text file's contents; a file that is not UTF-8 raises :class:`InputError` naming it,
    the byte, and how to convert it (instead of a bare codec error)."""
    from pathlib import Path

    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise InputError(
            f"{what} {path} is not UTF-8 text (byte 0x{data[error.start]:02x} on line {line}): convert it, "
            f"e.g. iconv -f latin1 -t utf-8 {path} > fixed.txt"
        ) from None


def user_errors() -> tuple[type[BaseException], ...]:
    # FileNotFoundError: a path the user gave does not exist (the message names it)
    return (UserError, FileNotFoundError)
