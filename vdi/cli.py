"""What every command-line entry point shares: ``run_cli`` wraps a ``main(argv) -> int`` so that
a user error (:func:`vdi.errors.user_errors`) prints one line ``error: ...`` on stderr and
exits 2, while anything else is a bug and keeps its traceback.

    @run_cli
    def main(argv: list[str] | None = None) -> int:
        ...

``main(argv)`` stays callable in-process (tests, other tools) with the same exit codes.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import TypeVar

from vdi.errors import user_errors

Main = TypeVar("Main", bound=Callable[..., int])


def run_cli(main: Main | None = None, *, also: tuple[type[BaseException], ...] = ()) -> Main | Callable[[Main], Main]:
    """Decorate a command's ``main``: user errors (and the types in ``also``, e.g. a download's
    ``ConnectionError``) become one line on stderr and exit code 2. Use as ``@run_cli`` or
    ``@run_cli(also=(ConnectionError,))``."""
    if main is None:
        return functools.partial(run_cli, also=also)

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        try:
            return main(*args, **kwargs)
        except (*user_errors(), *also) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return wrapped  # type: ignore[return-value]


__all__ = ["run_cli"]
