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
