"""What every command-line entry point shares: ``run_cli`` wraps a ``main(argv) -> int`` so that
the process environment defaults are set (:func:`set_process_env`) and a user error
(:func:`vdi.errors.user_errors`) prints one line ``error: ...`` on stderr and exits 2, while
anything else is a bug and keeps its traceback.

    @run_cli
    def main(argv: list[str] | None = None) -> int:
        ...

``main(argv)`` stays callable in-process (tests, other tools) with the same exit codes. The
environment is set where a process starts, never when a module is imported: by ``run_cli``, and
by the other starts (a submitit SLURM task, a Ray trial, the sweep scripts) calling
:func:`set_process_env` themselves.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable, Mapping
from typing import TypeVar

from vdi.errors import user_errors

Main = TypeVar("Main", bound=Callable[..., int])

# What every vdi process runs with unless the user set it. Child processes inherit it: SLURM
# tasks through sbatch's environment, Ray workers through their raylet, DataLoader workers.
PROCESS_ENV: dict[str, str] = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    # vdi.tracking fails fast against a dead server and keeps what it could not send
    # (MLflow's default retries with backoff for minutes)
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
}


def set_process_env(extra: Mapping[str, str] | None = None) -> None:
    """Set :data:`PROCESS_ENV` (and ``extra``) in ``os.environ``, keeping any value already set."""
    for name, value in {**PROCESS_ENV, **(extra or {})}.items():
        os.environ.setdefault(name, value)


def run_cli(main: Main | None = None, *, also: tuple[type[BaseException], ...] = ()) -> Main | Callable[[Main], Main]:
    """Decorate a command's ``main``: it starts with :func:`set_process_env`; user errors (and
    the types in ``also``, e.g. a download's ``ConnectionError``) become one line on stderr and
    exit code 2. Use as ``@run_cli`` or ``@run_cli(also=(ConnectionError,))``."""
    if main is None:
        return functools.partial(run_cli, also=also)

    @functools.wraps(main)
    def wrapped(*args, **kwargs) -> int:
        set_process_env()
        try:
            return main(*args, **kwargs)
        except (*user_errors(), *also) as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    return wrapped  # type: ignore[return-value]


__all__ = ["PROCESS_ENV", "run_cli", "set_process_env"]
