import subprocess
import sys

import pytest


@pytest.mark.integration
def test_demo_main_command_runs_and_learns():
    result = subprocess.run(
        [sys.executable, "-m", "vdi.demo", "--steps", "60"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("R1@0.5"))
    before, after = float(line.split()[2]), float(line.split()[4])
    assert after > before
