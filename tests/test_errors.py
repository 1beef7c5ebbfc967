"""User errors print one line and exit 2; a bug (a bare ValueError from inside) keeps its traceback."""

import pytest

import vdi.evaluate
from vdi.config import ConfigError
from vdi.data.format import ShardError
from vdi.errors import InputError, UserError, user_errors


def test_user_error_types_share_one_base():
    assert issubclass(ConfigError, UserError) and issubclass(ConfigError, ValueError)
    assert issubclass(ShardError, UserError) and issubclass(InputError, ValueError)
    assert ValueError not in user_errors()


def test_cli_prints_user_errors_as_one_line_and_keeps_bug_tracebacks(monkeypatch, capsys):
    def user_problem(*args, **kwargs):
        raise ShardError("no manifest.json in data/x; build the split")

    monkeypatch.setattr(vdi.evaluate, "evaluate_checkpoint", user_problem)
    assert vdi.evaluate.main(["--checkpoint", "m.pt", "--split", "test"]) == 2
    assert capsys.readouterr().err.strip() == "error: no manifest.json in data/x; build the split"

    def bug(*args, **kwargs):
        raise ValueError("an internal shape mismatch")

    monkeypatch.setattr(vdi.evaluate, "evaluate_checkpoint", bug)
    with pytest.raises(ValueError, match="internal shape mismatch"):
        vdi.evaluate.main(["--checkpoint", "m.pt", "--split", "test"])


def test_run_cli_turns_user_errors_into_one_line_and_exit_2(capsys):
    from vdi.cli import run_cli

    @run_cli
    def main(argv=None) -> int:
        raise InputError(f"--top-k is {argv[0]}; ask for at least 1 moment per sentence")

    assert main(["0"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: --top-k is 0; ask for at least 1 moment per sentence\n" and captured.out == ""
    assert main.__name__ == "main"


def test_run_cli_keeps_a_bugs_traceback_and_passes_exit_codes():
    from vdi.cli import run_cli

    @run_cli
    def bug(argv=None) -> int:
        raise ValueError("an internal shape mismatch")

    with pytest.raises(ValueError, match="internal shape mismatch"):
        bug([])
    assert run_cli(lambda argv=None: 3)([]) == 3


def test_run_cli_also_catches_the_extra_types_it_is_given(capsys):
    from vdi.cli import run_cli

    @run_cli(also=(ConnectionError,))
    def download(argv=None) -> int:
        raise ConnectionError("cannot reach example.org")

    assert download([]) == 2
    assert capsys.readouterr().err == "error: cannot reach example.org\n"


def test_run_cli_in_a_process_one_line_for_a_user_error_a_traceback_for_a_bug(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "tool.py"
    script.write_text(
        "import sys\n"
        "from vdi.cli import run_cli\n"
        "from vdi.errors import UserError\n"
        "@run_cli\n"
        "def main(argv=None):\n"
        "    raise (UserError if sys.argv[1] == 'user' else KeyError)('no shards under data/x; build them')\n"
        "sys.exit(main())\n"
    )
    user = subprocess.run([sys.executable, str(script), "user"], capture_output=True, text=True)
    assert user.returncode == 2 and user.stderr == "error: no shards under data/x; build them\n"
    bug = subprocess.run([sys.executable, str(script), "bug"], capture_output=True, text=True)
    assert bug.returncode == 1 and bug.stderr.startswith("Traceback") and "KeyError" in bug.stderr


def test_every_command_line_goes_through_run_cli():
    import data_prep.__main__
    import vdi.launch
    import vdi.predict
    import vdi.tracking
    import vdi.train

    mains = [vdi.train.main, vdi.evaluate.main, vdi.predict.main, vdi.tracking.main, vdi.launch.main]
    assert all(hasattr(main, "__wrapped__") for main in [*mains, data_prep.__main__._run_command])


def test_run_cli_sets_the_process_environment_keeping_what_the_user_set(monkeypatch):
    import os

    from vdi.cli import PROCESS_ENV, run_cli

    for name in PROCESS_ENV:
        monkeypatch.setenv(name, "before")  # restored after the test
        monkeypatch.delenv(name)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    seen = {}

    @run_cli
    def main(argv=None) -> int:
        seen.update({name: os.environ.get(name) for name in PROCESS_ENV})
        return 0

    assert main([]) == 0
    assert seen == {
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    }


def test_importing_the_modules_sets_no_environment_variable():
    """The environment is set where a process starts (run_cli, a SLURM task, a Ray trial, the
    sweep scripts' main), not as a side effect of an import."""
    import subprocess
    import sys
    from pathlib import Path

    sweeps = Path(__file__).resolve().parents[1] / "sweeps"
    code = (
        "import os, sys\n"
        f"sys.path.insert(0, {str(sweeps)!r})\n"
        "before = dict(os.environ)\n"
        "import data_prep.__main__, vdi.cli, vdi.distributed, vdi.launch, vdi.tracking, vdi.train\n"
        "import lambda_sweep, report, world_diagnosis\n"
        "print(sorted(set(os.environ.items()) ^ set(before.items())))\n"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "[]"
