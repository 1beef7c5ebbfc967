"""The errors a user can fix (bad config, missing data or model, bad input): command-line entry
points print them as one line and exit 2; anything else is a bug and keeps its traceback.

Every such error derives from :class:`UserError`, raised where the cause is known; a bare
``ValueError`` from inside the library is a bug, not bad input, and is not caught here."""

from __future__ import annotations


class UserError(Exception):
    """A problem the user can fix; the message names the thing and the fix."""


class InputError(UserError, ValueError):
    """Bad input or arguments (a ValueError too, for callers that catch that)."""


def user_errors() -> tuple[type[BaseException], ...]:
    # FileNotFoundError: a path the user gave does not exist (the message names it)
    return (UserError, FileNotFoundError)
